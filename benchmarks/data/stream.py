"""Streamed data: examples read from the packed store by index, decoded by worker processes.

`load_streamed` packs the data set once (benchmarks.data.pack) and gives its training and
test splits as `StreamSource`s. A training batch is the examples the trainer's plan names,
read (one pread each), decoded and transformed by `data.stream.workers` processes; with
`prefetch`, the batches of the next steps are decoded while the model trains on this one.
Only the examples named are read: a 10%-kept subset reads 10% of the bytes per epoch.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from benchmarks.augment import Augment
from benchmarks.cache import content_key
from benchmarks.data import gpu_decode
from benchmarks.data.decode import usable_cores
from benchmarks.data.imagenet import IMAGENET_SPLITS, centre_crop, imagenet_files, imagenet_folders
from benchmarks.data.loading import Source
from benchmarks.data.pack import PackedStore, PackPlan, pack
from benchmarks.data.source import EvalBatch, ExampleSource
from benchmarks.data.splits import stratified_split
from benchmarks.data.transforms import TRANSFORMS, eval_pixels, train_pixels
from benchmarks.errors import ConfigError

T = TypeVar("T")
STREAMABLE = ("imagenet",)
DECODERS = ("cpu", "cuda")
EVAL_BLOCK = 256


@dataclass(frozen=True)
class StreamOptions:
    """data.stream: how a streamed data set is packed, decoded and read ahead."""

    transform: str = "fixed"
    decode: str = "cpu"
    workers: int | None = None
    prefetch: int = 4
    reencode_short_side: int | None = None
    shard_mb: int = 256

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> StreamOptions:
        options = cls(**dict(cfg or {}))
        if options.transform not in TRANSFORMS:
            raise ConfigError(
                f"data.stream.transform={options.transform!r} is not allowed; use fixed (the "
                "in-memory decode, then data.augment) or crop (RandomResizedCrop + flip for "
                "training, Resize + CenterCrop for evaluation)"
            )
        if options.decode not in DECODERS:
            raise ConfigError(
                f"data.stream.decode={options.decode!r} is not allowed; use cpu (worker "
                "processes) or cuda (torchvision.io.decode_jpeg on the run's GPU)"
            )
        if options.workers is not None and options.workers < 0:
            raise ConfigError(f"data.stream.workers={options.workers} must be >= 0 or null")
        if options.prefetch < 0 or options.shard_mb < 1:
            raise ConfigError(
                f"data.stream.prefetch={options.prefetch} must be >= 0 and "
                f"data.stream.shard_mb={options.shard_mb} >= 1"
            )
        return options

    @property
    def worker_count(self) -> int:
        return max(1, usable_cores() - 1) if self.workers is None else self.workers


class Decoder:
    """Reads and transforms examples of one store, in `workers` processes (0: in this one)."""

    def __init__(self, store: PackedStore, workers: int) -> None:
        self.store, self.workers = store, workers
        self.examples_read = 0
        self.bytes_read = 0
        self._workers_pool = None

    def _pool(self) -> Any:
        if self._workers_pool is None:
            self._workers_pool = multiprocessing.get_context("fork").Pool(
                self.workers, initializer=_worker_init, initargs=(self.store,)
            )
            weakref.finalize(self, self._workers_pool.terminate)
        return self._workers_pool

    def _chunks(self, ids: np.ndarray) -> list[np.ndarray]:
        parts = max(1, min(self.workers, ids.size))
        return [c for c in np.array_split(ids, parts) if c.size]

    def read(self, split: str, ids: np.ndarray) -> list[bytes]:
        """The examples' encoded bytes, read here (for decoding on the GPU)."""
        self._count(split, ids)
        return list(self.store.read_many(split, ids))

    def _count(self, split: str, ids: np.ndarray) -> None:
        self.examples_read += int(ids.size)
        self.bytes_read += int(self.store.index[split]["length"][ids].sum())

    def _batch(
        self,
        kind: str,
        split: str,
        ids: np.ndarray,
        transform: str,
        r: int,
        seed: int,
        first: int = 0,
    ) -> Callable[[], np.ndarray]:
        """A function giving the batch's views [len(ids), 3, r, r], their decoding started now
        (`first`: the global row of ids[0], which seeds the training crops).

        The workers write their rows straight into one batch in shared memory: returning
        the pixels through the pool's pipe pickled a 64-image batch at 224 px (9.6 MB) and
        cost 10-20% of the decode time (measured with `python -m benchmarks.speed stream`).
        """
        self._count(split, ids)
        out = torch.empty((len(ids), 3, r, r), dtype=torch.uint8)
        if self.workers > 0:
            out.share_memory_()
        chunks = self._chunks(ids)
        starts = np.cumsum([0] + [c.size for c in chunks])
        jobs = [
            (kind, split, chunk, transform, r, seed, first + int(lo), out[lo : lo + chunk.size])
            for chunk, lo in zip(chunks, starts, strict=False)
        ]
        if self.workers == 0:
            for job in jobs:
                _run(self.store, job)
            return out.numpy
        pending = self._pool().map_async(_run_in_worker, jobs)

        def get() -> np.ndarray:
            pending.get()
            return out.numpy()

        return get

    def train(
        self, split: str, ids: np.ndarray, transform: str, r: int, seed: int, first: int = 0
    ) -> Callable[[], np.ndarray]:
        """A function giving the batch's training views [len(ids), 3, r, r] (started now);
        `first`: the row of ids[0] in the global batch, which seeds each example's crop."""
        return self._batch("train", split, ids, transform, r, seed, first)

    def eval(self, split: str, ids: np.ndarray, transform: str, r: int) -> np.ndarray:
        return self._batch("eval", split, ids, transform, r, 0)()


_worker_store: PackedStore | None = None


def _worker_init(store: PackedStore) -> None:
    global _worker_store
    _worker_store = store


def _run_in_worker(job: tuple) -> None:
    _run(_worker_store, job)


def _run(store: PackedStore, job: tuple) -> None:
    """One chunk of a batch: (kind, split, ids, transform, r, seed, global row of the first,
    the chunk's rows of the batch to write)."""
    kind, split, ids, transform, r, seed, first, rows = job
    out = rows.numpy()
    for k, data in enumerate(store.read_many(split, ids)):
        if kind == "train":
            out[k] = train_pixels(data, transform, r, (seed, first + k))
        else:
            out[k] = eval_pixels(data, transform, r)


class StreamSource(ExampleSource):
    """Some examples of one split of a packed store, at positions 0..n-1 of `ids`."""

    def __init__(
        self,
        decoder: Decoder,
        split: str,
        ids: np.ndarray,
        labels: torch.Tensor,
        num_classes: int,
        resolution: int,
        options: StreamOptions,
        augment: Augment | None = None,
    ) -> None:
        self.decoder, self.split, self.ids = decoder, split, np.asarray(ids, dtype=np.int64)
        self.labels, self.num_classes = labels, num_classes
        self.resolution, self.options = resolution, options
        self.augment = augment or Augment()
        self._ready: dict[int, tuple[torch.Tensor, int, Callable[[], np.ndarray]]] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return 3, self.resolution, self.resolution

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.decoder.store.fingerprint.encode())
        digest.update(self.split.encode() + self.options.transform.encode())
        digest.update(self.ids.tobytes())
        digest.update(self.labels.cpu().long().numpy().tobytes())
        return digest.hexdigest()

    @property
    def in_memory(self) -> bool:
        return False

    def _ids(self, idx: torch.Tensor) -> np.ndarray:
        return self.ids[idx.cpu().numpy()]

    def _start(self, idx: torch.Tensor, seed: int, first: int) -> Callable[[], np.ndarray]:
        transform, r = self.options.transform, self.resolution
        return self.decoder.train(self.split, self._ids(idx), transform, r, seed, first)

    def train_batch(
        self, idx: torch.Tensor, seed: int, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Each example's random crop is seeded by (seed, its row in the global batch), as
        the flip and pad-crop augmentation draw theirs: a rank's slice (`rows`) gets the
        views the whole batch has at those rows, whatever the ranks and workers."""
        first = rows[0] if rows is not None else 0
        if self.options.decode == "cuda":
            datas = self.decoder.read(self.split, self._ids(idx))
            inputs = gpu_decode.train_views(
                datas, self.options.transform, self.resolution, seed, self.device, first
            )
        else:
            ready = self._ready.pop(seed, None)
            get = None
            if ready is not None and ready[1] == first and torch.equal(ready[0], idx):
                get = ready[2]
            pixels = (get or self._start(idx, seed, first))()
            inputs = torch.from_numpy(pixels).to(self.device)
        if self.augment.active:
            gen = torch.Generator(device=self.device).manual_seed(seed)
            inputs = self.augment(inputs, gen, rows)
        return inputs

    def prefetch(
        self,
        plan: Iterable[T],
        step_seed: Callable[[int], int] | None = None,
        read_ahead: bool = True,
        shard: Callable[[torch.Tensor], tuple[torch.Tensor, tuple[int, int] | None]] | None = None,
    ) -> Iterator[T]:
        """The plan's items, the next `data.stream.prefetch` batches decoding meanwhile.

        Only a plan whose items do not depend on training (`read_ahead`) is read ahead: a
        dynamic sampler draws its next pass from the losses of this one.
        """
        depth = self.options.prefetch if read_ahead and step_seed is not None else 0
        if depth == 0 or self.decoder.workers == 0 or self.options.decode == "cuda":
            yield from plan
            return
        queue: deque = deque()
        items = iter(plan)
        for item in items:
            seed = step_seed(item[0])
            idx, rows = (item[1], None) if shard is None else shard(item[1])
            first = rows[0] if rows is not None else 0
            self._ready[seed] = (idx, first, self._start(idx, seed, first))
            queue.append(item)
            if len(queue) > depth:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

    def eval_batches(
        self, batch_size: int | None = None, indices: torch.Tensor | None = None
    ) -> Iterator[EvalBatch]:
        positions = torch.arange(self.n) if indices is None else indices.cpu()
        transform, r = self.options.transform, self.resolution
        for chunk in positions.split(batch_size or EVAL_BLOCK):
            on_device = chunk.to(self.device)
            if self.options.decode == "cuda":
                datas = self.decoder.read(self.split, self._ids(chunk))
                images = gpu_decode.eval_views(datas, transform, r, self.device)
            else:
                pixels = self.decoder.eval(self.split, self._ids(chunk), transform, r)
                images = torch.from_numpy(pixels).to(self.device)
            yield on_device, images, self.labels[on_device]

    def subset(self, positions: torch.Tensor) -> StreamSource:
        positions = positions.cpu()
        return StreamSource(
            self.decoder,
            self.split,
            self.ids[positions.numpy()],
            self.labels[positions.to(self.device)],
            self.num_classes,
            self.resolution,
            self.options,
            self.augment,
        )

    def with_labels(self, labels: torch.Tensor) -> StreamSource:
        return StreamSource(
            self.decoder,
            self.split,
            self.ids,
            labels,
            self.num_classes,
            self.resolution,
            self.options,
            self.augment,
        )


@dataclass(frozen=True, eq=False)
class StreamedData:
    """A streamed data set: what the pipeline reads of a DataSet, without its tensors."""

    name: str
    train: StreamSource
    test: StreamSource
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    store: PackedStore
    options: StreamOptions
    full_n_train: int
    full_fingerprint: str
    full_train_index: np.ndarray | None = None
    val_index: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def train_y(self) -> torch.Tensor:
        return self.train.labels.cpu()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def origin(self) -> np.ndarray:
        return self.train.ids

    @property
    def source_n_train(self) -> int:
        return self.full_n_train

    @property
    def source_fingerprint(self) -> str:
        return self.full_fingerprint


def load_streamed(cfg: Mapping[str, Any], device: torch.device) -> StreamedData:
    """The data set `cfg` names, packed once and streamed from its store."""
    name = str(cfg.get("name"))
    if name not in STREAMABLE:
        raise ConfigError(
            f"data.storage=stream is not available for data.name={name}; streamed: "
            f"{', '.join(STREAMABLE)} (the others fit in memory: data.storage=memory)"
        )
    options = StreamOptions.from_config(cfg.get("stream"))
    if options.decode == "cuda" and device.type != "cuda":
        raise ConfigError(f"data.stream.decode=cuda needs a CUDA device; this run's is {device}")
    source = Source.from_config(cfg)
    resolution, class_dirs = imagenet_folders(source)
    dirs = class_dirs["train"] + class_dirs["test"]
    key = content_key(
        {
            "loader": "imagenet",
            "resolution": resolution,
            "reencode_short_side": options.reencode_short_side,
            "shard_mb": options.shard_mb,
            "dirs": [[str(d.resolve()), d.stat().st_mtime_ns] for d in dirs],
        }
    )
    folder = source.cache_dir / "packed" / f"imagenet{resolution}px-{key}"
    classes, splits = imagenet_files(source.name, class_dirs)
    plan = PackPlan(
        name=source.name,
        classes=classes,
        splits={s: splits[s] for s in IMAGENET_SPLITS},
        decode=CentreCrop(resolution),
        reencode_short_side=options.reencode_short_side,
        shard_bytes=options.shard_mb << 20,
    )
    store = pack(folder, plan)
    decoder = Decoder(store, options.worker_count)
    augment = Augment(**dict(cfg.get("augment") or {}))

    def split_source(split: str, ids: np.ndarray | None) -> StreamSource:
        labels = store.labels(split)
        ids = np.arange(labels.size) if ids is None else ids
        y = torch.from_numpy(labels[ids].astype(np.int64)).to(device)
        return StreamSource(decoder, split, ids, y, len(classes), resolution, options, augment)

    seed = int(cfg.get("subset_seed") or 0)
    train_ids = _subset_ids(store.labels("train"), cfg.get("max_train"), seed)
    test_ids = _subset_ids(store.labels("test"), cfg.get("max_test"), seed)
    train, test = split_source("train", train_ids), split_source("test", test_ids)
    subset = train_ids is not None or test_ids is not None
    fingerprint = store.fingerprint
    if subset:
        digest = hashlib.sha256(store.fingerprint.encode())
        digest.update(train.ids.tobytes() + test.ids.tobytes())
        fingerprint = digest.hexdigest()
    return StreamedData(
        name=source.name,
        train=train,
        test=test,
        classes=tuple(classes),
        mean=tuple(store.manifest["mean"]),
        std=tuple(store.manifest["std"]),
        fingerprint=fingerprint,
        store=store,
        options=options,
        full_n_train=int(store.labels("train").size),
        full_fingerprint=store.fingerprint,
        full_train_index=train.ids if subset else None,
        info={"store": str(store.folder), "transform": options.transform},
    )


@dataclass(frozen=True)
class CentreCrop:
    """The in-memory decode at one resolution (a picklable callable for the packers)."""

    resolution: int

    def __call__(self, image) -> np.ndarray:
        return centre_crop(image, self.resolution)


def _subset_ids(labels: np.ndarray, limit: object, seed: int) -> np.ndarray | None:
    """Positions of a stratified subsample of `limit` examples, or None to keep them all."""
    if limit is None or limit == labels.size:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= labels.size:
        raise ConfigError(f"data.max_train/max_test={limit!r} must be in [1, {labels.size}]")
    return stratified_split(torch.from_numpy(labels), limit, seed)[1].numpy()
