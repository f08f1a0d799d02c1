"""The one way a speed benchmark writes its JSON: atomically, with the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.atomic import atomic_write


def machine() -> dict[str, Any]:
    """What a figure needs beside it to be read: Python, platform, CPU model, load."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "load_1min": os.getloadavg()[0],
    }


def cpu_model() -> str:
    """The CPU's model name (AMD EPYC, Intel Xeon, ...); `platform.processor()` is often empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: Path | str, payload: dict[str, Any]) -> None:
    """Write `payload` and the machine's description to `path`, atomically."""
    text = json.dumps({**payload, **machine()}, indent=1, default=str)
    atomic_write(Path(path), lambda f: f.write(text), binary=False)
