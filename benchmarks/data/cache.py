"""The decoded tensors cached on disk, keyed by the source files' paths, sizes and mtimes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock

from benchmarks.atomic import atomic_write
from benchmarks.cache import content_key
from benchmarks.data.dataset import DataSet, fingerprint
from benchmarks.data.loading import Source
from benchmarks.errors import DataError

CACHE_FORMAT = 1
CACHE_HINT = "point data.cache_dir or PRUNEBENCH_CACHE at a writable folder"
log = logging.getLogger(__name__)


def cached(
    loader: str, files: Sequence[Path], source: Source, decode: Callable[[], DataSet]
) -> DataSet:
    """The decoded data set from the cache, decoding (once, under a lock) when absent or stale."""
    material = {
        "loader": loader,
        "format": CACHE_FORMAT,
        "files": [[str(f.resolve()), *_size_and_mtime(f)] for f in files],
    }
    path = source.cache_dir / "data" / f"{loader}-{content_key(material)}.pt"
    found = _read_cache(path, loader)
    if found is not None:
        return found
    with _cache_lock(path):
        found = _read_cache(path, loader, report=False)
        if found is None:
            found = decode()
            _write_cache(path, found)
    return found


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _read_cache(path: Path, loader: str, report: bool = True) -> DataSet | None:
    """The cached data set, or None when absent, unreadable or altered (then rebuilt).

    The fingerprint is recomputed from the tensors read, so that flipped bytes on disk are
    caught rather than trained on under the stored fingerprint (the cost, measured in the
    README's Results section, is one sha256 pass over the decoded data).
    """
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        if blob["format"] != CACHE_FORMAT:
            return None
        ds = DataSet(
            name=loader,
            train_x=blob["train_x"],
            train_y=blob["train_y"],
            test_x=blob["test_x"],
            test_y=blob["test_y"],
            classes=tuple(str(c) for c in blob["classes"]),
            mean=tuple(float(m) for m in blob["mean"]),
            std=tuple(float(s) for s in blob["std"]),
            fingerprint=str(blob["fingerprint"]),
            val_index=blob.get("val_index"),
        )
        computed = fingerprint(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    except Exception as err:
        problem = f"is unreadable ({type(err).__name__})"
    else:
        if computed == ds.fingerprint:
            return ds
        problem = (
            f"content hashes to {computed[:12]}..., not to its stored fingerprint "
            f"{ds.fingerprint[:12]}..."
        )
    if report:
        log.warning("data cache %s %s; rebuilding it from the source files", path, problem)
    return None


@contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.lock")
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot use the data cache {path.parent} ({err}); {CACHE_HINT}") from None
    try:
        yield
    finally:
        lock.release()


def _write_cache(path: Path, ds: DataSet) -> None:
    """Write atomically: a reader (or a killed writer) never leaves half a cache file."""
    blob = {
        "format": CACHE_FORMAT,
        "train_x": ds.train_x,
        "train_y": ds.train_y,
        "test_x": ds.test_x,
        "test_y": ds.test_y,
        "classes": list(ds.classes),
        "mean": list(ds.mean),
        "std": list(ds.std),
        "fingerprint": ds.fingerprint,
        "val_index": ds.val_index,
    }
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as err:
        raise DataError(f"cannot write the data cache {path} ({err}); {CACHE_HINT}") from None
