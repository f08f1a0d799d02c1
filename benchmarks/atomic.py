"""Atomic file writes: a reader sees the old file or the whole new one, even after kill -9.

Every file prunebench writes for others to read (records, score artifacts, data caches,
checkpoints, score exports) goes through here: a temp file in the same directory,
fsync, then rename over the target. The file gets the mode any other tool would give it
(0666 less the process umask), so that collaborators sharing a results or cache folder can
read it; `tempfile.mkstemp` alone would leave it 0600.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# a write that failed with this little room left failed because the disk is full
FULL_BELOW_BYTES = 1 << 20


def atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = True) -> None:
    """Call `write(file)` on a temp file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as err:
        # torch.save reports a full disk as "unexpected pos N vs M": say what it is
        if shutil.disk_usage(path.parent).free < FULL_BELOW_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
