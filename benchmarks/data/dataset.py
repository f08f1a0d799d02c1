"""A data set as whole uint8 tensors: its invariants, statistics and fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import DataError

SPLITS = ("train", "test")
STATS_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True, eq=False)
class DataSet:
    """A data set's images and labels; its invariants are checked on construction.

    Equality is identity: comparing whole tensors field by field is never what a caller wants.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    # positions in the training tensors of the data set's own validation split (CINIC-10's
    # valid), used when data.val_size does not carve one; None where it has none
    val_index: torch.Tensor | None = None
    # Under data.max_train/max_test: each training example's index in the full training
    # split, that split's size and the full data set's fingerprint. Exports, kept subsets
    # and precomputed scores are keyed by these, so they name the same examples whatever
    # the subset.
    full_train_index: np.ndarray | None = None
    full_n_train: int | None = None
    full_fingerprint: str | None = None

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.device.type != "cpu":
                raise DataError(f"{self.name}: {split} images are not uint8 [N, C, H, W] on CPU")
            if not x.is_contiguous():
                raise DataError(f"{self.name}: {split} images are not contiguous")
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {x.shape[0]} {split} images but labels of shape "
                    f"{tuple(y.shape)} and dtype {y.dtype}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataError(
                    f"{self.name}: {split} labels span {int(y.min())}..{int(y.max())}, "
                    f"outside the {len(self.classes)} classes"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train_x.shape[1:])} but test images "
                f"are {tuple(self.test_x.shape[1:])}"
            )
        if not len(self.mean) == len(self.std) == self.in_channels:
            raise DataError(f"{self.name}: mean/std do not have one value per channel")
        if self.val_index is not None and (
            self.val_index.dtype != torch.int64 or self.val_index.dim() != 1
        ):
            raise DataError(f"{self.name}: its validation indices are not a 1-d int64 tensor")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def origin(self) -> np.ndarray:
        """Each training example's index in the full data set's training split."""
        if self.full_train_index is None:
            return np.arange(self.train_y.shape[0])
        return self.full_train_index

    @property
    def source_n_train(self) -> int:
        """The size of the full training split this one was drawn from."""
        return self.full_n_train or int(self.train_y.shape[0])

    @property
    def source_fingerprint(self) -> str:
        """The fingerprint of the full data set this one was drawn from (itself if not drawn)."""
        return self.full_fingerprint or self.fingerprint

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' bytes in order: equal content gives equal fingerprints."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy())
    return digest.hexdigest()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of x/255, exact, from value counts (no float copy of x).

    Counted over chunks of images, so that the temporary copy of one channel stays small
    next to a tensor of many gigabytes.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    chunk = max(1, STATS_CHUNK_BYTES // max(1, x[:1, 0].numel()))
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.zeros(256, dtype=torch.float64)
        for start in range(0, x.shape[0], chunk):
            part = x[start : start + chunk, c].reshape(-1)
            counts += torch.bincount(part, minlength=256).double()
        mean = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - mean) ** 2).sum() / counts.sum())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: Sequence[str],
) -> DataSet:
    """A DataSet from decoded arrays, with the full training set's statistics and fingerprint."""
    tx, ty, vx, vy = (
        torch.from_numpy(np.require(a, dtype=dt, requirements=["C", "W"]))
        for a, dt in zip((*train, *test), (np.uint8, np.int64) * 2, strict=True)
    )
    mean, std = channel_stats(tx)
    return DataSet(name, tx, ty, vx, vy, tuple(classes), mean, std, fingerprint(tx, ty, vx, vy))
