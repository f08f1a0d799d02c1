"""Training states and networks read from disk without running code; damaged ones set aside.

Checkpoints (`results.dir/.checkpoints`) and the proxy's states and networks (the score
cache) live in folders that a cluster's users share, and a full disk or a kill can cut them
short. They are read with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only, so a planted file cannot run code. A file that cannot be read that way is
renamed to `<name>.corrupt` with one warning naming it, and the caller goes on as if it
were absent: the cell retrains what the file held instead of failing on every rerun.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.errors import ConfigError

CORRUPT_SUFFIX = ".corrupt"
# lines of torch's weights-only refusal that say nothing about the file itself
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")

log = logging.getLogger(__name__)


def read_state(path: Path, map_location: torch.device | str = "cpu") -> Any | None:
    """The object saved at `path`, or None when absent or unreadable (then set aside)."""
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of any file
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:  # removed by the job that finished with it
        return None
    except Exception as err:  # unpickling fails in many types: EOFError, UnpicklingError, ...
        set_aside(path, load_failure(err))
        return None


def read_state_strictly(path: Path, key: str | None = None) -> Any:
    """A file the user named (model.weights, a score file): read like a state, and refused in
    one line (ConfigError naming `key`, or the file) when it cannot be read that way."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling fails in many types: EOFError, UnpicklingError, ...
        raise ConfigError(f"{key or path}: cannot read it ({load_failure(err)})") from None


def load_failure(err: Exception) -> str:
    """torch.load's reason in one line, saying when the file held what a state never holds."""
    lines = [
        line.strip()
        for line in str(err).splitlines()
        if line.strip() and not line.strip().startswith(_BOILERPLATE)
    ]
    if "Weights only load failed" in str(err):
        detail = lines[0] if lines else "an object of an unsupported type"
        return f"it holds more than tensors and plain values, refused unread: {detail}"
    if not lines:
        return f"{type(err).__name__}: empty or cut short"
    return f"{type(err).__name__}: {lines[0].split('. ')[0]}"


def set_aside(path: Path, reason: str) -> None:
    """Rename a file that cannot serve to `<name>.corrupt`, with one warning naming both."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another job set it aside first
        return
    except OSError:
        path.unlink(missing_ok=True)
        target = None
    log.warning(
        "%s cannot be read (%s); %s, and the run goes on without it",
        path,
        reason,
        f"moved aside to {target.name}" if target is not None else "removed",
    )
