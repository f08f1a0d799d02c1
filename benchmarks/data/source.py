"""Where the trainer and the score passes get their examples: one interface, two homes.

Data that fits sits on the device as one uint8 tensor (`TensorSource`): a training batch
is an index gather plus the batched `Augment`, a score pass walks the tensor. Data that
does not fit is read from a packed store on disk (`benchmarks.data.stream`): a batch is
read, decoded and transformed on demand. Both give the same three things, so that the
trainer and every method are written once:

- `train_batch(idx, seed, rows)`: the examples at positions `idx`, under the training
  transform, seeded by `seed` (the trainer derives it from the run's order seed and the
  step, so that a resumed run sees the same batches); `rows=(start, total)`: `idx` is one
  rank's slice, from row `start`, of a global batch of `total` (data-parallel), and each
  example is transformed as it is in the whole batch on one device;
- `eval_batches(batch_size, indices)`: (positions, images, labels) under the eval
  transform, in the order asked, for score passes and evaluation;
- `prefetch(plan)`: the trainer's plan, possibly reading ahead (a stream does).

Positions are 0..n-1 in this source's own order; `subset(positions)` is the source of
some of them (the kept examples), reading only those.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

from benchmarks.augment import Augment
from benchmarks.errors import ConfigError

T = TypeVar("T")
EvalBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ExampleSource(ABC):
    """A labelled set of images: training batches, eval passes, read-ahead."""

    labels: torch.Tensor  # int64 [n] on `device`
    num_classes: int

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.labels.device

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the model sees."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 that changes with any image, label or position of this source."""

    @property
    @abstractmethod
    def in_memory(self) -> bool:
        """True when `images` holds every example as one tensor on the device."""

    @property
    def images(self) -> torch.Tensor:
        """All images as one uint8 tensor [n, C, H, W] on the device (in memory only)."""
        raise NotInMemory("the training images as one tensor")

    @abstractmethod
    def train_batch(
        self, idx: torch.Tensor, seed: int, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """uint8 images [len(idx), C, H, W] on the device, under the training transform
        (`rows`: this rank's (start, total) of the global batch, see the module's doc)."""

    @abstractmethod
    def eval_batches(
        self, batch_size: int | None = None, indices: torch.Tensor | None = None
    ) -> Iterator[EvalBatch]:
        """(positions, uint8 images, labels) under the eval transform, in the order of
        `indices` (default: all, in order); `batch_size` None: the source's own block size
        (in memory: everything at once, as views)."""

    @abstractmethod
    def subset(self, positions: torch.Tensor) -> ExampleSource:
        """The examples at `positions`, in that order, as a source of their own."""

    @abstractmethod
    def with_labels(self, labels: torch.Tensor) -> ExampleSource:
        """The same images under other labels (label noise)."""

    def prefetch(
        self,
        plan: Iterable[T],
        step_seed: Callable[[int], int] | None = None,
        read_ahead: bool = True,
        shard: Callable[[torch.Tensor], tuple[torch.Tensor, tuple[int, int] | None]] | None = None,
    ) -> Iterable[T]:
        """The trainer's plan of (step, idx, ...) items; a stream decodes the batches of the
        next steps (seeded by `step_seed(step)`) meanwhile, where `read_ahead` allows it:
        of each, where `shard` is given, the part `shard(idx)` = (local idx, rows) that this
        process's `train_batch(local idx, seed, rows)` will be asked for."""
        return plan


class NotInMemory(ConfigError):
    """A caller asked for the whole data set as one tensor, but it is streamed from disk."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not in memory: this run streams its data from disk "
            "(data.storage=stream); read it batch by batch with ctx.eval_batches(), or use "
            "data.storage=memory where it fits"
        )


class TensorSource(ExampleSource):
    """Images as one uint8 tensor on the device; training batches gathered and augmented."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        augment: Augment | None = None,
        num_classes: int | None = None,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
        self.x, self.labels = x, y
        self.augment = augment or Augment()
        self.num_classes = int(num_classes if num_classes is not None else _classes_in(y))
        self._fingerprint: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2]), int(self.x.shape[3])

    @property
    def fingerprint(self) -> str:
        """sha256 over the images' bytes, then the labels' (as int64): computed once."""
        if self._fingerprint is None:
            digest = hashlib.sha256(self.x.cpu().contiguous().numpy().tobytes())
            digest.update(self.labels.cpu().long().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def images(self) -> torch.Tensor:
        return self.x

    def train_batch(
        self, idx: torch.Tensor, seed: int, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        inputs = self.x[idx]
        if self.augment.active:
            gen = torch.Generator(device=self.x.device).manual_seed(seed)
            inputs = self.augment(inputs, gen, rows)
        return inputs

    def eval_batches(
        self, batch_size: int | None = None, indices: torch.Tensor | None = None
    ) -> Iterator[EvalBatch]:
        if indices is None:
            positions = torch.arange(self.n, device=self.device)
            step = batch_size or max(1, self.n)
            for start in range(0, self.n, step):
                stop = start + step
                yield positions[start:stop], self.x[start:stop], self.labels[start:stop]
            return
        indices = indices.to(self.device)
        step = batch_size or max(1, int(indices.numel()))
        for chunk in indices.split(step):
            yield chunk, self.x[chunk], self.labels[chunk]

    def subset(self, positions: torch.Tensor) -> TensorSource:
        positions = positions.to(self.device)
        return TensorSource(
            self.x[positions], self.labels[positions], self.augment, self.num_classes
        )

    def with_labels(self, labels: torch.Tensor) -> TensorSource:
        return TensorSource(self.x, labels, self.augment, self.num_classes)


def _classes_in(labels: torch.Tensor) -> int:
    return int(labels.max()) + 1 if labels.numel() else 0
