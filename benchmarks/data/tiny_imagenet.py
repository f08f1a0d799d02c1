"""Tiny ImageNet: the official zip or its unpacked folder."""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import SPLITS, DataSet, assemble
from benchmarks.data.decode import IMAGE_SUFFIXES, decode_same_size
from benchmarks.data.download import Remote
from benchmarks.data.imagefolder import same_classes
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate, official
from benchmarks.errors import DataError

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# Stanford publishes no checksum; this is the MD5 that Avalanche's loader (ContinualAI/
# avalanche, benchmarks/datasets/tiny_imagenet) and other independent loaders check.
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_TOP = "tiny-imagenet-200"
TINY_ARCHIVE = f"{TINY_TOP}.zip"


@DATASETS.register("tiny_imagenet")
def _tiny_imagenet(source: Source) -> DataSet:
    """Tiny ImageNet: 200 classes of 64x64 images; the labelled val split is the test set."""
    path = source.path or source.root / TINY_ARCHIVE
    if path.is_dir():
        files = [path / "val" / "val_annotations.txt"]
        if not files[0].is_file():
            raise DataError(
                f"{source.name}: {files[0]} not found; {path} should be the unpacked "
                f"{TINY_TOP}/ folder (train/<wnid>/images/, val/images/, val/val_annotations.txt)"
            )
        files += sorted(path.glob("train/*/images/*")) + sorted(path.glob("val/images/*"))
        members = functools.partial(_folder_members, path, files)
    else:
        files = locate(source, [[path]], official(source, path, TINY_ARCHIVE, _tiny_remotes))
        members = functools.partial(_zip_members, path, TINY_TOP)
    return cached(
        "tiny_imagenet", files, source, lambda: _decode_tiny(source.name, members(), str(path))
    )


def _tiny_remotes() -> list[Remote]:
    return [Remote((TINY_URL,), TINY_ARCHIVE, TINY_MD5)]


def _folder_members(folder: Path, files: Sequence[Path]) -> dict[str, Callable[[], bytes]]:
    """The files by their path below `folder`, each read when called."""
    return {f.relative_to(folder).as_posix(): f.read_bytes for f in files}


def _zip_members(archive: Path, top: str) -> dict[str, Callable[[], bytes]]:
    """The archive's files under `top/`, by their path below it, each read when called."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive}: not a readable zip archive ({err})") from None
    prefix = f"{top}/"
    return {
        info.filename.removeprefix(prefix): functools.partial(zf.read, info.filename)
        for info in zf.infolist()
        if info.filename.startswith(prefix) and not info.is_dir()
    }


def _decode_tiny(name: str, members: Mapping[str, Callable[[], bytes]], where: str) -> DataSet:
    annotations = members.get("val/val_annotations.txt")
    if annotations is None:
        raise DataError(f"{where}: no val/val_annotations.txt; not the Tiny ImageNet layout")
    val_labels = {}
    for line in annotations().decode().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            val_labels[fields[0]] = fields[1]
    entries = []  # (class, file, split, member): sorted, the order never depends on the source
    for rel in members:
        parts = rel.split("/")
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            split, label = "train", parts[1]
        elif len(parts) == 3 and parts[:2] == ["val", "images"]:
            if parts[2] not in val_labels:
                raise DataError(f"{where}: {rel} has no line in val/val_annotations.txt")
            split, label = "test", val_labels[parts[2]]
        else:
            continue
        entries.append((label, parts[-1], split, rel))
    entries.sort()
    by_split = {s: [e for e in entries if e[2] == s] for s in SPLITS}
    classes = same_classes(name, {s: [e[0] for e in by_split[s]] for s in SPLITS})
    ordered = by_split["train"] + by_split["test"]
    x = decode_same_size(
        [members[e[3]] for e in ordered], [f"{where}:{e[3]}" for e in ordered], name
    )
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[e[0]] for e in ordered], dtype=np.int64)
    n = len(by_split["train"])
    return assemble(name, (x[:n], y[:n]), (x[n:], y[n:]), classes)
