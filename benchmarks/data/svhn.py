"""SVHN, from torchvision's .mat files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import SPLITS, DataSet, assemble
from benchmarks.data.digits import DIGIT_CLASSES
from benchmarks.data.download import Remote
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate
from benchmarks.errors import DataError


@DATASETS.register("svhn")
def _svhn(source: Source) -> DataSet:
    files = [source.root / "train_32x32.mat", source.root / "test_32x32.mat"]

    files = locate(source, [files], _svhn_remotes)
    return cached(
        "svhn", files, source, lambda: assemble("svhn", *map(_read_svhn, files), DIGIT_CLASSES)
    )


def _svhn_remotes() -> list[Remote]:
    """torchvision's URLs and MD5s of the two .mat files."""
    import torchvision.datasets

    splits = torchvision.datasets.SVHN.split_list
    return [Remote((url,), file, md5) for url, file, md5 in (splits[s] for s in SPLITS)]


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as [N, C, H, W] and labels with digit 0 as 0 (the file stores it as 10)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except (OSError, ValueError, EOFError, KeyError, MatReadError) as err:
        raise DataError(f"{path}: not a readable SVHN .mat file ({err})") from None
    if x.ndim != 4 or x.shape[3] != y.size:
        raise DataError(f"{path}: X of shape {x.shape} does not match {y.size} labels")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return x.transpose(3, 2, 0, 1), labels
