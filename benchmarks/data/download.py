"""Fetch a data set's official files into the data root: verified, once, never half-written.

A SLURM array starts many tasks on one data root at the same moment; a file lock in the root
lets the first download and the others wait and then read its files. Everything is
downloaded into a private temporary folder inside the root, checked against its MD5, and
only then moved into place, so a failed or killed download leaves nothing a loader could
mistake for data. A mirror (`data.mirror` or PRUNEBENCH_MIRROR) serves the official files
under `<mirror>/<host>/<path>` of their official URLs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from benchmarks.errors import DataError

OTHER_WAYS = (
    "or point data.root or the environment variable PRUNEBENCH_DATA at a folder that holds "
    "the files"
)


@dataclass(frozen=True)
class Remote:
    """One official file: where it is published, its checksum, where it lands under the root.

    `md5` is None only where the publisher gives no checksum; `verify` then checks the file
    (its layout and counts), raising DataError; `extract` unpacks an archive into the root.
    """

    urls: tuple[str, ...]
    filename: str
    md5: str | None
    extract: bool = False
    verify: Callable[[Path], None] | None = None


def fetch(name: str, remotes: Sequence[Remote], root: Path, mirror: str | None) -> None:
    """Download every remote into `root`, skipping files that are already in place.

    Called under `download_lock`, so scratch folders of this data set left by a killed
    download are no one's and are removed first.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{name}-download-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=root))
    except OSError as err:
        raise DataError(
            f"{name}: cannot write to the data root {root} ({err}); {OTHER_WAYS}"
        ) from None
    try:
        for remote in remotes:
            _fetch_one(name, remote, root, scratch, mirror)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def download_lock(name: str, root: Path) -> Iterator[None]:
    """Hold one data set's download lock in its data root, saying so while waiting for it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / f".{name}.download.lock"))
    except OSError as err:
        raise DataError(
            f"{name}: cannot write to the data root {root} ({err}); {OTHER_WAYS}"
        ) from None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"{name}: another process is downloading it; waiting", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def mirrored(url: str, mirror: str | None) -> str:
    """The official URL, or where the mirror serves it (`<mirror>/<host>/<path>`)."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def _fetch_one(name: str, remote: Remote, root: Path, scratch: Path, mirror: str | None) -> None:
    from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

    target = root / remote.filename
    if not remote.extract and target.is_file():
        return
    local = scratch / Path(remote.filename).name
    errors = []
    for url in (mirrored(u, mirror) for u in remote.urls):
        try:
            download_url(url, str(scratch), local.name)
            break
        except (OSError, RuntimeError, ValueError) as err:
            local.unlink(missing_ok=True)
            errors.append(f"{url}: {err}")
    else:
        raise DataError(
            f"{name}: download failed ({'; '.join(errors)}); it needs internet (or a mirror in "
            f"data.mirror / PRUNEBENCH_MIRROR), {OTHER_WAYS}"
        )
    if remote.md5 is not None:
        found = calculate_md5(str(local))
        if found != remote.md5:
            raise DataError(
                f"{name}: {url} gave a file with MD5 {found}, not the published {remote.md5}; "
                f"nothing was kept; retry later, {OTHER_WAYS}"
            )
    if remote.verify is not None:
        try:
            remote.verify(local)
        except DataError as err:
            raise DataError(f"{name}: {url}: {err}; nothing was kept; {OTHER_WAYS}") from None
    if not remote.extract:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        return
    unpacked = scratch / "unpacked"
    try:
        extract_archive(str(local), str(unpacked))
    except Exception as err:
        raise DataError(
            f"{name}: {url} is not a readable archive ({err}); nothing was kept"
        ) from None
    _move_new_files(unpacked, root)


def _move_new_files(source: Path, root: Path) -> None:
    """Move every file under `source` to the same place under `root`; never overwrite one."""
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = root / path.relative_to(source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
