"""CINIC-10: the official train/valid/test image tree, folder or archive."""

from __future__ import annotations

import functools
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from benchmarks.data.cache import cached
from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.download import Remote
from benchmarks.data.imagefolder import (
    TreeImage,
    folder_images,
    read_folder,
    read_tar,
    tree_arrays,
    tree_key,
)
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate, official
from benchmarks.errors import ConfigError, DataError

CINIC_SPLITS = ("train", "valid", "test")
CINIC_COUNTS = {"train": 90_000, "valid": 90_000, "test": 90_000}
CINIC_URLS = (
    "https://datashare.is.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
    "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
)
CINIC_VALID = ("train", "val")
CINIC_ARCHIVE = "CINIC-10.tar.gz"


@DATASETS.register("cinic10")
def _cinic10(source: Source) -> DataSet:
    """CINIC-10 (Darlow et al. 2018); `valid` merged into training (data.valid=train, as Data
    Diet did) or kept apart as the validation split (data.valid=val)."""
    valid = source.options.get("valid", "train")
    if valid not in CINIC_VALID:
        raise ConfigError(
            f"data.valid={valid!r} is not allowed; use train (CINIC-10's valid split merged "
            "into training) or val (valid as the validation split)"
        )
    path = source.path or source.root / CINIC_ARCHIVE
    if path.is_dir():
        files = folder_images(path, source.name, CINIC_SPLITS)
        images = functools.partial(read_folder, path, files, CINIC_SPLITS)
    else:
        files = locate(source, [[path]], official(source, path, CINIC_ARCHIVE, _cinic_remotes))
        images = functools.partial(read_tar, path, CINIC_SPLITS)
    ds = cached("cinic10", files, source, lambda: _decode_cinic(source.name, images()))
    return ds if valid == "val" else replace(ds, val_index=None)


def _cinic_remotes() -> list[Remote]:
    return [Remote(CINIC_URLS, CINIC_ARCHIVE, None, verify=_verify_cinic)]


def _decode_cinic(name: str, images: list[TreeImage]) -> DataSet:
    """Training tensors hold train then valid; val_index marks valid's positions."""
    classes, arrays = tree_arrays(name, images, CINIC_SPLITS)
    (tx, ty), (vx, vy) = arrays["train"], arrays["valid"]
    ds = assemble(
        name, (np.concatenate([tx, vx]), np.concatenate([ty, vy])), arrays["test"], classes
    )
    return replace(ds, val_index=torch.arange(len(ty), len(ty) + len(vy)))


def _verify_cinic(archive: Path) -> None:
    """The publisher gives no checksum: check that the archive is the whole tree instead."""
    counts = dict.fromkeys(CINIC_SPLITS, 0)
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                key = tree_key(PurePosixPath(member.name).parts, CINIC_SPLITS)
                if member.isfile() and key is not None:
                    counts[key[1]] += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"not a readable tar archive ({err})") from None
    if counts != CINIC_COUNTS:
        raise DataError(f"the archive holds {counts} images, the official one {CINIC_COUNTS}")
