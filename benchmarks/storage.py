"""Folders a run writes to: proved writable before the work, and a record kept when they fill.

A full or read-only results folder used to be found only when the finished record was
written, after the whole training; on a cluster every cell of a grid trained and died.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.errors import StorageError
from benchmarks.results import record_path, save_record
from benchmarks.subsets import Subset, remove_orphans, subset_path, write_subset

FALLBACK_FOLDER = "unsaved-records"


def os_error(err: OSError) -> str:
    """'[Errno 28] No space left on device', without the temp file's name."""
    return f"[Errno {err.errno}] {err.strerror}" if err.errno else str(err)


def check_writable(folders: Mapping[str, Path], min_free_mb: float) -> None:
    """Create each folder if needed, write, fsync and remove a probe file in it, and check
    that it has `min_free_mb` free. `folders` maps the config key to name in errors to the
    folder."""
    for key, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".prunebench-probe-", dir=folder)
            try:
                os.write(fd, b"prunebench write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
            free_mb = shutil.disk_usage(folder).free / 2**20
        except OSError as err:
            raise StorageError(f"{key} {folder} is not writable: {os_error(err)}") from None
        if free_mb < min_free_mb:
            raise StorageError(
                f"{key} {folder} has {free_mb:.1f} MB free, less than "
                f"results.min_free_mb={min_free_mb:g}; free space there or point {key} elsewhere"
            )


def fallback_folders(cache_dir: Path) -> list[Path]:
    """Where a record goes when results.dir cannot take it, most durable first.

    The cache folder is the user's own choice of a persistent place (often on another
    file system than the results); the home folder is persistent and seen from the login
    node; the temp folder comes last because on a cluster $TMPDIR is often node-local and
    wiped when the job ends.
    """
    folders = [cache_dir / FALLBACK_FOLDER, Path.home() / ".prunebench" / FALLBACK_FOLDER]
    folders.append(Path(tempfile.gettempdir()) / f"prunebench-{FALLBACK_FOLDER}")
    return list(dict.fromkeys(f.expanduser() for f in folders))


def save_record_or_fallback(
    results_dir: Path,
    record: dict[str, Any],
    fallbacks: Sequence[Path],
    subset: Subset | None = None,
) -> Path:
    """Save the record and its kept-subset sidecar in `results_dir`; if that fails, in the first
    fallback folder that takes both, and raise a StorageError naming where they went (the
    run's result is never lost)."""
    try:
        return save_with_subset(results_dir, record, subset)
    except OSError as err:
        problem = f"cannot write the record to results.dir {results_dir}: {os_error(err)}"
    what = record["status"] + (f" ({record['error']})" if record.get("error") else "")
    for folder in fallbacks:
        try:
            path = save_with_subset(folder, record, subset)
        except OSError:
            _remove_if_empty(folder)
            continue
        raise StorageError(
            f"{problem}; the {what} record is saved in {path} instead: move it into "
            f"{results_dir} when there is space, then a rerun counts it"
        )
    tried = ", ".join(str(f) for f in fallbacks)
    raise StorageError(
        f"{problem}, nor to any fallback folder ({tried}); the {what} run's metrics: "
        f"{record.get('metrics')}"
    )


def save_with_subset(folder: Path, record: dict[str, Any], subset: Subset | None) -> Path:
    """The sidecar, then the record that names it, in `folder`; a sidecar whose record could
    not follow is removed, and so are the sidecars of this cell that a killed run left."""
    sidecar = subset_path(record_path(folder, record)) if subset is not None else None
    try:
        if sidecar is not None:
            record["selection"]["subset"] = write_subset(
                sidecar, subset.indices, subset.weights, subset.counts
            )
        path = save_record(folder, record)
    except OSError:
        if sidecar is not None:
            sidecar.unlink(missing_ok=True)
        raise
    remove_orphans(folder, record["run_key"])
    return path


def _remove_if_empty(folder: Path) -> None:
    """A fallback folder made for a record that could not go there is not left behind."""
    with contextlib.suppress(OSError):
        folder.rmdir()
