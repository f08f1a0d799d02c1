"""sklearn's 8x8 digits, shipped inside sklearn."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.splits import stratified_split

DIGIT_CLASSES = tuple(str(i) for i in range(10))


@DATASETS.register("digits")
def _digits(source: Source) -> DataSet:
    """sklearn's 8x8 digits: shipped inside sklearn, so always there, even offline."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * 255 / 16).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(torch.from_numpy(y), 360, seed=0)
    return assemble("digits", (x[train], y[train]), (x[test], y[test]), DIGIT_CLASSES)
