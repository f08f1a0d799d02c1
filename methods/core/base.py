"""The interface every pruning method implements, and what a method may use.

A method holds only the idea of the method: it turns the training set (and,
through `ScoreContext`, proxy models and trainings) into one importance score
per training example. Selection rules (top-k, balance, offset, CCS) live in
`methods.core.select` and apply to any score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from benchmarks.augment import Augment
from benchmarks.cache import ScoreCache
from benchmarks.compute import Tally
from benchmarks.data.source import EvalBatch, ExampleSource, NotInMemory, TensorSource
from benchmarks.distributed import Dist
from benchmarks.errors import ConfigError
from benchmarks.models import Classifier, build_model
from benchmarks.options import check_option_types
from benchmarks.train import LossWeights, TrainSettings
from methods.core.select import PruneSpec, select

T = TypeVar("T")
# rows of a sharded pass gathered at a time (they travel on the device, land on the host)
GATHER_ROWS = 65536


@dataclass
class ScoreCost:
    """What the scores cost to compute, so that pruning can be judged net of its cost.

    `proxy_epochs`, `proxy_trainings` and `seconds` are what the scores need, whatever
    the cache holds beyond it and whichever job computed it: for each proxy run they
    read, the epochs up to the latest one read and the seconds those epochs took to
    train (a run read only at initialisation is no training), plus the seconds of the
    scores' own passes (GraNd's gradients, feature extraction). `passes` counts the same
    work in example-passes per network (`benchmarks.compute`), the proxy trainings'
    recorded passes up to the epochs read included. `trainings_run` counts the proxy
    trainings this job started from initialisation and `epochs_run` the proxy epochs it
    trained, extensions of a stored training included (0 when all was cached).
    """

    proxy_epochs: float = 0.0
    proxy_trainings: int = 0
    seconds: float = 0.0
    trainings_run: int = 0
    epochs_run: int = 0
    passes: Tally = field(default_factory=Tally)
    _read: dict[str, tuple[int, float, Tally]] = field(default_factory=dict, repr=False)

    def need(self, proxy_run: str, epoch: int, seconds: float, passes: Tally) -> None:
        """The scores read proxy run `proxy_run` (cache key) at `epoch`, trained in `seconds`
        and `passes` (both counted from its initialisation)."""
        before, before_seconds, before_passes = self._read.get(proxy_run, (0, 0.0, Tally()))
        if epoch <= before:
            return
        self._read[proxy_run] = (epoch, seconds, passes)
        self.proxy_epochs += epoch - before
        self.proxy_trainings += int(before == 0)
        self.seconds += seconds - before_seconds
        self.passes = self.passes + (passes - before_passes)

    def add_artifact(self, meta: dict[str, Any]) -> None:
        """The cost stated by an artifact of a method that trains its own proxy networks (or
        by a file of scores or a subset computed elsewhere)."""
        self.proxy_epochs += float(meta.get("proxy_epochs", 0.0))
        self.proxy_trainings += int(meta.get("proxy_trainings", 0))
        self.seconds += float(meta.get("seconds", 0.0))
        self.passes = self.passes + Tally.from_record(meta.get("passes"))

    def as_record(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["passes"] = self.passes.as_record()
        return out

    def merge(self, other: ScoreCost) -> None:
        """Add the cost `other` counted (a proxy run's, on the rank that ran it), as if this
        cost had counted it itself: a proxy run read by both is counted once."""
        needed_seconds, needed_passes = 0.0, Tally()
        for proxy_run, (epoch, seconds, passes) in other._read.items():
            self.need(proxy_run, epoch, seconds, passes)
            needed_seconds += seconds
            needed_passes = needed_passes + passes
        self.seconds += other.seconds - needed_seconds
        self.passes = self.passes + (other.passes - needed_passes)
        self.trainings_run += other.trainings_run
        self.epochs_run += other.epochs_run


@dataclass
class ScoreSpread:
    """How a cell's scores were spread over its ranks, for the record."""

    world_size: int = 1
    # the proxy runs each rank computed (index: rank), as one-device computations
    runs_by_rank: list[list[int]] = field(default_factory=lambda: [[]])
    # score passes (GraNd, features) that every rank computed on its shard of the examples
    sharded_passes: int = 0
    # the proxy runs trained data-parallel over all ranks (score.proxy_parallel=data)
    data_parallel_runs: list[int] = field(default_factory=list)

    @classmethod
    def over(cls, world: int) -> ScoreSpread:
        return cls(world_size=world, runs_by_rank=[[] for _ in range(world)])

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScoreContext:
    """Everything a method may need to score the training set.

    A method reads the training images through `eval_batches` (score passes under the
    eval transform, batch by batch, in memory or streamed) and trains through `source`.
    `train_x`, the images as one tensor, exists only where they are in memory: reading it
    on streamed data is one ConfigError (NotInMemory) naming the batch API.
    """

    train_x: torch.Tensor | None = field(repr=False)  # uint8 [N, C, H, W] on `device`
    train_y: torch.Tensor  # int64 [N] on `device` (noisy labels where label noise is on)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    seed: int
    data_fingerprint: str
    augment: Augment
    model_name: str
    train_cfg: dict[str, Any]
    model_options: dict[str, Any] = field(default_factory=dict)
    cache: ScoreCache | None = None
    cost: ScoreCost = field(default_factory=ScoreCost)
    # the validation split (data.val_size), for methods that match it (Glister, GradMatch)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # proxy epochs whose networks a recorded proxy training keeps (besides its end and the
    # epoch asked), so that GraNd and features at the shared score epoch need no retraining
    keep_weights_at: tuple[int, ...] = ()
    # the run's selection rule: greedy orders stop where it reads no further (None: whole)
    prune: PruneSpec | None = None
    # Where the examples come from (under data.max_train/val_size they are a subset): each
    # one's index in the full data set's original training order, that set's size and
    # fingerprint. None: the examples are the whole training set, in order.
    origin: np.ndarray | None = None
    source_n_train: int | None = None
    source_fingerprint: str | None = None
    # the training and validation sets when they are streamed from disk (train_x and
    # val_x are then None); None: they are the tensors train_x and val_x
    streamed: ExampleSource | None = None
    streamed_val: ExampleSource | None = None
    # the cell's ranks (world 1: one device): proxy runs spread over them, passes sharded
    dist: Dist = field(default_factory=Dist, repr=False)
    spread: ScoreSpread = field(default_factory=ScoreSpread)
    # on several ranks: `runs` spreads the proxy runs over them, `data` trains each proxy
    # run data-parallel over all of them (score.proxy_parallel)
    proxy_parallel: str = "runs"
    _scratch: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def n(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def source(self) -> ExampleSource:
        """The training set under its labels (`train_y`) and training transform."""
        if self.streamed is not None:
            return self.streamed
        return TensorSource(self.train_x, self.train_y, self.augment, self.num_classes)

    @property
    def val_source(self) -> ExampleSource | None:
        """The validation split as a source, or None without one."""
        if self.streamed_val is not None:
            return self.streamed_val
        if self.val_x is None or self.val_y is None:
            return None
        return TensorSource(self.val_x, self.val_y, None, self.num_classes)

    def eval_batches(
        self, batch_size: int | None = None, indices: torch.Tensor | None = None
    ) -> Iterator[EvalBatch]:
        """(positions, uint8 images, labels) of the training set under the eval transform,
        in order (or in the order of `indices`); `batch_size` None: the source's own block
        (in memory: the whole set at once)."""
        return self.source.eval_batches(batch_size, indices)

    @property
    def data_parallel(self) -> bool:
        """Proxy runs train data-parallel over the cell's ranks (score.proxy_parallel=data)."""
        return self.dist.active and self.proxy_parallel == "data"

    def map_runs(self, fn: Callable[[int], T], runs: int) -> list[T]:
        """[fn(0), ..., fn(runs - 1)] on every rank, run k computed by rank k % world alone.

        Each fn(k) is a one-device computation (a proxy training and what it records; it
        must use no collective: `alone`). The results and what each run cost travel
        through the store, so a rank done with its share waits there, never in a
        collective (K = 10 runs on 8 ranks: some ranks run two). Every rank then holds
        the same results and the same `cost` as one device would.

        With `data_parallel`, every rank computes fn(0), ..., fn(runs - 1) in turn instead:
        each proxy run trains over all ranks (`methods.core.dynamics.recorded_run`), and
        what fn computes from it is computed by every rank.
        """
        dist = self.dist
        if not dist.active:
            return [fn(k) for k in range(runs)]
        if self.data_parallel:
            results = [fn(k) for k in range(runs)]
            done = self.spread.data_parallel_runs
            done.extend(k for k in range(runs) if k not in done)
            return results
        total, mine = self.cost, {}
        try:
            with self.alone():
                for k in range(dist.rank, runs, dist.world):
                    self.cost = ScoreCost()
                    mine[k] = (fn(k), self.cost)
        finally:
            self.cost = total
        done = dist.exchange("scores/runs", mine)
        for k in range(runs):
            total.merge(done[k][1])
            owner = self.spread.runs_by_rank[k % dist.world]
            if k not in owner:
                owner.append(k)
        return [done[k][0] for k in range(runs)]

    def sharded_rows(
        self,
        source: ExampleSource,
        rows: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """`rows(images, labels)` of every example of `source` (eval transform), on the host.

        Per-example results (gradient norms, features): each rank computes its contiguous
        shard of the examples and the rows are gathered in the global order, so every rank
        holds what one device computes. With fewer examples than ranks, every rank
        computes them all.
        """
        dist = self.dist
        n = source.n
        if not dist.active or n < dist.world:
            indices = None
        else:
            lo, hi = dist.shard_bounds(n)
            indices = torch.arange(lo, hi)
        parts = [
            {name: t.cpu() for name, t in rows(x, y).items()}
            for _, x, y in source.eval_batches(None, indices)
        ]
        local = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        if indices is None:
            return local
        return {name: dist.gather_rows(t, n, GATHER_ROWS) for name, t in local.items()}

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Compute as one device, whatever the cell's ranks (a share of `map_runs`, or the
        selection that rank 0 makes alone)."""
        dist = self.dist
        self.dist = Dist(device=self.device)
        try:
            yield
        finally:
            self.dist = dist

    @property
    def store(self) -> ScoreCache:
        """The score cache; without one, a scratch cache that lives as long as this context,
        so that one job still trains each proxy run once for all its scores."""
        if self.cache is not None:
            return self.cache
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="prunebench-scores-")
        return ScoreCache(self._scratch.name)

    @property
    def original_index(self) -> np.ndarray:
        """Each example's index in the full data set's original training order."""
        return np.arange(self.n) if self.origin is None else self.origin

    @property
    def labels(self) -> np.ndarray:
        return self.train_y.cpu().numpy()

    @property
    def labels_hash(self) -> str:
        """Scores depend on the labels, which label noise changes without changing the data."""
        return hashlib.sha256(self.labels.astype(np.int64).tobytes()).hexdigest()

    @property
    def val_hash(self) -> str:
        """What identifies the validation split a score was matched to: its images and labels."""
        val = self.val_source
        return "" if val is None else val.fingerprint

    def build_model(self, name: str | None, seed: int) -> Classifier:
        """A fresh model (the run's architecture unless `name` is given) seeded by `seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            channels, height, width = self.source.image_shape
            model = build_model(
                name or self.model_name,
                in_channels=channels,
                num_classes=self.num_classes,
                image_size=(height, width),
                mean=self.mean,
                std=self.std,
                options=self.model_options if name in (None, self.model_name) else None,
            )
        return model.to(self.device)

    def proxy_settings(self, epochs: int | None) -> TrainSettings:
        """The run's training settings on all data, with the proxy's schedule length."""
        values = {**self.train_cfg, "budget": "iterations"}
        if epochs is not None:
            values["epochs"] = int(epochs)
        return TrainSettings.from_config(values)


def _train_x(ctx: ScoreContext) -> torch.Tensor:
    images = ctx.__dict__.get("_train_x")
    if images is None and ctx.streamed is not None:
        raise NotInMemory("ctx.train_x (the training images as one tensor)")
    return images


def _set_train_x(ctx: ScoreContext, images: torch.Tensor | None) -> None:
    ctx.__dict__["_train_x"] = images


# a property over the dataclass field, so that reading it on streamed data is one clear error
ScoreContext.train_x = property(_train_x, _set_train_x)


class PruningMethod(ABC):
    """Scores training examples: higher score = kept first under `prune.keep=hard`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    direction: ClassVar[str]
    # what computing the score costs beyond its proxy trainings (time and memory), if notable
    cost: ClassVar[str] = ""
    prunes: ClassVar[bool] = True
    dynamic: ClassVar[bool] = False
    # False: `prune.*` does not choose the subset (a subset read from a file): it is left
    # out of the run key, and `removed_fraction` states the fraction
    selects: ClassVar[bool] = True

    @abstractmethod
    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        """Scores of each independent run, shape [runs, ctx.n]."""

    def check(self, ctx: ScoreContext) -> None:
        """Raise ConfigError for bad input that only the data reveals, before any work is
        recorded (a method whose options alone can be checked does so on construction)."""
        return None

    def score(self, ctx: ScoreContext) -> np.ndarray:
        """The method's score, shape [ctx.n]: the mean over its independent runs."""
        return self.score_runs(ctx).mean(axis=0)

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights | None:
        """Per-example loss weights for the kept examples (`kept`: sorted positions), or None.

        A weighted coreset (CRAIG, GradMatch) returns one weight per kept example, in the
        order of `kept`; the trainer then weights each example's loss by it.
        """
        return None

    def row_label(self) -> str:
        """The leaderboard row's name when `method.label` is not set."""
        return self.name

    def removed_fraction(self, ctx: ScoreContext) -> float | None:
        """The removed fraction, for a method that fixes it itself (else None: prune.fraction)."""
        return None

    def check_schedule(self, train_cfg: Mapping[str, Any]) -> None:  # noqa: B027 (a hook)
        """Fail before any data is loaded if an option does not fit the training schedule."""

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def select_subset(
        self,
        ctx: ScoreContext,
        scores: np.ndarray,
        spec: PruneSpec,
        seed: int,
        cut_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """Sorted positions of the kept examples: `spec`'s rule over the scores (`cut_scores`:
        CCS's AUM for its hard cut, see `methods.core.select.select`).

        A method whose paper selects by its own sampling or budget (DUAL's Beta sampling,
        D2's class-balanced modes) overrides it.
        """
        return select(scores, ctx.labels, spec, seed, cut_scores)

    def resolve(self, ctx: ScoreContext) -> PruningMethod:
        """This method with every default that depends on the run (an epoch that follows the
        proxy's schedule) made concrete: what the record states as its options."""
        return self


def method_option_names(cls: type[PruningMethod]) -> list[str]:
    """The options a method takes: its dataclass fields (a method without any takes none)."""
    return sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []


def make_method(cls: type[PruningMethod], options: dict[str, Any]) -> PruningMethod:
    """Instantiate a method from config, naming any option it does not take or mistypes."""
    allowed = set(method_option_names(cls))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"method '{cls.name}' has no option {', '.join(unknown)}; "
            f"its options: {', '.join(sorted(allowed)) or '(none)'}"
        )
    if allowed:
        check_option_types("method", options, typing.get_type_hints(cls))
    return cls(**options)
