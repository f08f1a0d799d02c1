"""Score artifacts: computed once per content key, shared by every job that needs them.

An artifact is a set of named numpy arrays plus JSON metadata in one `.npz` file.
Writers take a file lock, so that two jobs needing the same artifact compute it
once; files appear by atomic rename, so that a reader never sees half a file,
even when a writer is killed with SIGKILL. A reader checks that the artifact holds what
it asked for (its stored kind and material), so that a file copied or renamed over
another is recomputed, not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from benchmarks.atomic import atomic_write

Arrays = dict[str, np.ndarray]
META_KEY = "__meta__"
log = logging.getLogger(__name__)


def content_key(material: Mapping[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ScoreCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, kind: str, material: Mapping[str, Any]) -> Path:
        return self.directory / "scores" / f"{kind}-{content_key(material)}.npz"

    def load_or_compute(
        self,
        kind: str,
        material: Mapping[str, Any],
        compute: Callable[[], tuple[Arrays, dict[str, Any]]],
        sufficient: Callable[[dict[str, Any]], bool] = lambda meta: True,
    ) -> tuple[Arrays, dict[str, Any]]:
        """The artifact for `material`, computing it (under a lock) if absent or insufficient.

        `sufficient(meta)` lets a caller accept a stored artifact that holds more than it
        needs (e.g. a proxy training recorded further than the epoch asked for).
        """
        found = self.find(kind, material, sufficient)
        if found is not None:
            return found
        path = self.path(kind, material)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            found = _matching(read_artifact(path), path, kind, material, report=False)
            if found is not None and sufficient(found[1]):
                return found
            arrays, meta = compute()
            meta = {**meta, "kind": kind, "material": dict(material)}
            write_artifact(path, arrays, meta)
        return arrays, meta

    def find(
        self,
        kind: str,
        material: Mapping[str, Any],
        sufficient: Callable[[dict[str, Any]], bool] = lambda meta: True,
    ) -> tuple[Arrays, dict[str, Any]] | None:
        """The stored artifact for `material` if it is there and sufficient, else None."""
        path = self.path(kind, material)
        found = _matching(read_artifact(path), path, kind, material)
        return found if found is not None and sufficient(found[1]) else None

    def save(
        self, kind: str, material: Mapping[str, Any], arrays: Arrays, meta: dict[str, Any]
    ) -> None:
        """Store an artifact computed outside `load_or_compute` (a pass sharded over ranks,
        which must not run under one rank's lock)."""
        path = self.path(kind, material)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            write_artifact(path, arrays, {**meta, "kind": kind, "material": dict(material)})


def _matching(
    found: tuple[Arrays, dict[str, Any]] | None,
    path: Path,
    kind: str,
    material: Mapping[str, Any],
    report: bool = True,
) -> tuple[Arrays, dict[str, Any]] | None:
    """`found` if it was computed for (kind, material), else None (then it is recomputed)."""
    if found is None:
        return None
    meta = found[1]
    stored = meta.get("material")
    if (
        meta.get("kind") == kind
        and isinstance(stored, dict)
        and content_key(stored) == content_key(material)
    ):
        return found
    if report:
        log.warning(
            "score artifact %s holds %s scores of another request (kind or material differ); "
            "recomputing it",
            path,
            meta.get("kind"),
        )
    return None


def read_artifact(path: Path) -> tuple[Arrays, dict[str, Any]] | None:
    """The stored arrays and metadata, or None when absent or unreadable (then recomputed)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != META_KEY}
            meta = json.loads(str(f[META_KEY]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays, meta


def write_artifact(path: Path, arrays: Arrays, meta: dict[str, Any]) -> None:
    packed = {**arrays, META_KEY: np.array(json.dumps(meta, default=str))}
    atomic_write(path, lambda f: np.savez(f, **packed))
