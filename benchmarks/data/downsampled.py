"""Downsampled ImageNet (Chrabaszcz et al. 2017): the official npz batches."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate
from benchmarks.errors import DataError

DOWNSAMPLED_TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
DOWNSAMPLED_VAL = "val_data.npz"
IMAGENET_CLASSES = 1000
IMAGENET_HOME = "https://image-net.org/download-images"


def _register_downsampled(name: str, size: int) -> None:
    """ImageNet{size}x{size}: train_data_batch_1..10.npz and val_data.npz, anywhere under the
    data set's folder (the official zips unpack into one folder each)."""

    def load(source: Source) -> DataSet:
        folder = source.path or source.root / name
        wanted = (*DOWNSAMPLED_TRAIN, DOWNSAMPLED_VAL)
        found = {f.name: f for f in sorted(folder.glob("**/*.npz")) if f.name in wanted}
        layout = [found.get(w, folder / w) for w in wanted]
        how = (
            f"the files need an image-net.org login: download Imagenet{size}_train_npz and "
            f"Imagenet{size}_val_npz (Downsampled ImageNet {size}x{size}) from {IMAGENET_HOME} "
            f"and unzip them into {folder}, or point data.root or the environment variable "
            "PRUNEBENCH_DATA at a folder that holds them"
        )
        files = locate(source, [layout], None, " (in any subfolder)", how)
        mapping = folder / "map_clsloc.txt"
        key_files = [*files, mapping] if mapping.is_file() else files
        return cached(
            name,
            key_files,
            source,
            lambda: _decode_downsampled(name, size, files, _clsloc_names(mapping)),
        )

    DATASETS.register(name)(load)


def _clsloc_names(mapping: Path) -> tuple[str, ...]:
    """Class names of labels 1..1000: the wnids of the ILSVRC devkit's map_clsloc.txt (the
    order the npz labels follow) when it is in the folder, else the label numbers."""
    if not mapping.is_file():
        return tuple(str(i) for i in range(1, IMAGENET_CLASSES + 1))
    rows = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
    by_label = {int(row[1]): row[0] for row in rows if len(row) >= 2 and row[1].isdigit()}
    if sorted(by_label) != list(range(1, IMAGENET_CLASSES + 1)):
        raise DataError(f"{mapping}: expected one 'wnid label name' line for labels 1..1000")
    return tuple(by_label[i] for i in range(1, IMAGENET_CLASSES + 1))


def _decode_downsampled(
    name: str, size: int, files: Sequence[Path], classes: tuple[str, ...]
) -> DataSet:
    """Streamed: the labels first (small), then each batch's pixels straight into one
    preallocated uint8 array, so that the peak is that array plus one batch file."""
    labels = [_npz_array(f, "labels", np.int64, 1) - 1 for f in files]
    for f, y in zip(files, labels, strict=True):
        if y.size and (int(y.min()) < 0 or int(y.max()) >= IMAGENET_CLASSES):
            raise DataError(f"{f}: labels span {int(y.min()) + 1}..{int(y.max()) + 1}, not 1..1000")
    counts = [y.size for y in labels[:-1]]
    train_x = np.empty((sum(counts), 3, size, size), dtype=np.uint8)
    starts = np.cumsum([0, *counts])
    for f, start, count in zip(files[:-1], starts[:-1], counts, strict=True):
        train_x[start : start + count] = _npz_images(f, size, count)
    test_x = _npz_images(files[-1], size, labels[-1].size)
    return assemble(name, (train_x, np.concatenate(labels[:-1])), (test_x, labels[-1]), classes)


def _npz_array(path: Path, key: str, dtype: type, ndim: int) -> np.ndarray:
    try:
        with np.load(path) as npz:
            array = np.asarray(npz[key])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(
            f"{path}: not a downsampled-ImageNet npz batch with '{key}' ({err})"
        ) from None
    if array.ndim != ndim:
        raise DataError(f"{path}: '{key}' has shape {array.shape}, expected {ndim} dimensions")
    return array.astype(dtype, copy=False)


def _npz_images(path: Path, size: int, count: int) -> np.ndarray:
    """[count, 3, size, size]: each row of 'data' is the R, G and B planes, row-major."""
    data = _npz_array(path, "data", np.uint8, 2)
    if data.shape != (count, 3 * size * size):
        raise DataError(
            f"{path}: 'data' is {data.shape}, expected ({count}, {3 * size * size}) for "
            f"{count} labels at {size}x{size}"
        )
    return data.reshape(count, 3, size, size)


_register_downsampled("imagenet32", 32)
_register_downsampled("imagenet64", 64)
