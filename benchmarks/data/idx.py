"""MNIST and Fashion-MNIST, from IDX files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.digits import DIGIT_CLASSES
from benchmarks.data.download import Remote
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate, read_bytes
from benchmarks.errors import DataError

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_IMAGES, IDX_LABELS = 2051, 2049


def _register_idx(name: str, folder: str, torchvision_name: str, classes: tuple[str, ...]) -> None:
    """An MNIST-format data set, found in the Debian, torchvision or flat layout under root."""

    def load(source: Source) -> DataSet:
        dirs = (source.root / folder, source.root / torchvision_name / "raw", source.root)
        preferred = (".gz", ""), ("", ".gz"), ("", ".gz")
        layouts = [
            [d / (base + ext) for base in MNIST_FILES]
            for d, exts in zip(dirs, preferred, strict=True)
            for ext in exts
        ]

        hint = f" (or the same files, plain or gzip, in {dirs[1]} or {dirs[2]})"
        files = locate(source, layouts, lambda: _idx_remotes(torchvision_name), hint)
        return cached(name, files, source, lambda: _decode_idx(name, files, classes))

    DATASETS.register(name)(load)


def _idx_remotes(torchvision_name: str) -> list[Remote]:
    """torchvision's mirrors and MD5s, its raw/ layout (which the loader reads as it is)."""
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, torchvision_name)
    return [
        Remote(tuple(m + file for m in dataset.mirrors), f"{torchvision_name}/raw/{file}", md5)
        for file, md5 in dataset.resources
    ]


def _decode_idx(name: str, files: Sequence[Path], classes: tuple[str, ...]) -> DataSet:
    train_x, train_y, test_x, test_y = (
        _read_idx(f, magic) for f, magic in zip(files, (IDX_IMAGES, IDX_LABELS) * 2, strict=True)
    )
    return assemble(name, (train_x[:, None], train_y), (test_x[:, None], test_y), classes)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array of unsigned bytes, checked against its header (magic, dims, length)."""
    raw = read_bytes(path)
    kind = "images" if magic == IDX_IMAGES else "labels"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, shorter than its header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header says {kind} of shape {dims} ({expected} bytes) but the file "
            f"holds {len(raw)} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


_register_idx("mnist", "mnist", "MNIST", DIGIT_CLASSES)
_register_idx("fashion_mnist", "fashion-mnist", "FashionMNIST", FASHION_CLASSES)
