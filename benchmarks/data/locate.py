"""Finding a data set's files under the data root, downloading the official ones when allowed."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.data.download import Remote, download_lock, fetch
from benchmarks.data.loading import Source
from benchmarks.errors import DataError

HOW_TO_GET = (
    "get them with data.download=auto or data.download=true (the official download, needs "
    "internet), or point data.root or the environment variable PRUNEBENCH_DATA at a folder "
    "that holds them"
)


def locate(
    source: Source,
    layouts: Sequence[Sequence[Path]],
    remotes: Callable[[], Sequence[Remote]] | None,
    alternatives: str = "",
    how_to_get: str = HOW_TO_GET,
) -> list[Path]:
    """The files of the first complete layout, downloading the official files when allowed.

    `remotes` is None for a data set without a public download: `download=auto` then only
    says where to get the files, `download=true` says there is nothing to download.
    """
    found = _first_complete(layouts)
    if found is None and source.download is True and remotes is None:
        raise DataError(
            f"{source.name}: data.download=true but it has no public download; {how_to_get}"
        )
    if found is None and source.download and remotes is not None:
        with download_lock(source.name, source.root):
            found = _first_complete(layouts)
            if found is None:
                fetch(source.name, remotes(), source.root, source.mirror)
                found = _first_complete(layouts)
    if found is None:
        expected = ", ".join(str(p) for p in layouts[0])
        raise DataError(
            f"{source.name}: data files not found; expected {expected}{alternatives}; {how_to_get}"
        )
    return found


def _first_complete(layouts: Sequence[Sequence[Path]]) -> list[Path] | None:
    return next((list(files) for files in layouts if all(f.is_file() for f in files)), None)


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name ends in .gz."""
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        what = "not a valid gzip file" if path.suffix == ".gz" else "unreadable"
        raise DataError(f"{path}: {what} ({err})") from None


def official(
    source: Source, path: Path, official_name: str, remotes: Callable[[], list[Remote]]
) -> Callable[[], list[Remote]] | None:
    """The download, where `path` is where it lands (the official name in the data root)."""
    return remotes if path == source.root / official_name else None
