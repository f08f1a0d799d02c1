"""Proxy trainings, and the one recorded proxy run that feeds every training-dynamics score.

A proxy run trains the proxy model on the whole training set with the run's
trainer and records, per example:
- after every epoch (and at initialisation, epoch 0), eval-mode summaries of the
  softmax on un-augmented images: EL2N, true-class probability, entropy, top-2
  margin, least confidence, correctness, and how far the softmax moved since the
  previous epoch (`prob_shift`, TDDS's per-epoch contribution; 0 at epoch 0);
- at every mini-batch presentation (train mode, augmented, before the update):
  forgetting events (correct -> incorrect), whether it was ever classified
  correctly, the sum of logit margins (AUM), the sum of softmax margins p_y - max_j p_j
  (CCS's AUM), and, after every epoch, the running sum of train-mode EL2N
  (`train_el2n_cum`, CCS's EL2N: the sum over the first epochs).
EL2N@t for any t, forgetting, AUM and the uncertainty scores of one (data, proxy,
seed) therefore come from one training, cached as one artifact. The same recorded
training keeps its network at the epochs that GraNd and the feature methods read
(the asked epoch, the shared score epoch, the end of the schedule) and its full
training state where it stopped, so that a later score asking for a later epoch
continues it instead of training another proxy: whatever the order of the scores
and jobs, each proxy run is trained once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.atomic import atomic_write
from benchmarks.cache import content_key, read_artifact
from benchmarks.compute import Tally, snapshot
from benchmarks.data.source import ExampleSource
from benchmarks.distributed import Dist
from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from benchmarks.options import check_option_types
from benchmarks.seeding import CELL_SEED, derive_seed
from benchmarks.state_files import read_state, set_aside
from benchmarks.train import (
    BatchHook,
    Checkpointing,
    EpochHook,
    budget_steps,
    source_logits,
    train,
)
from methods.core.base import ScoreContext

EVAL_SUMMARIES = ("el2n", "p_true", "entropy", "margin", "least_confidence", "correct")
SHIFT_SUMMARIES = ("prob_shift", "train_el2n_cum")
RECORDED_SUMMARIES = EVAL_SUMMARIES + SHIFT_SUMMARIES

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Proxy:
    """Which proxy trainings a score averages over.

    `model`: architecture (None = the run's); `epochs`: length of the proxy's schedule
    (None = the run's `train.epochs`); `seed`: the score seed. An integer is one draw of
    the scores that every retraining seed and fraction reuses (the spread of a grid's
    seeds then covers the retraining only); `cell` draws them with the cell's seed, so
    that a grid's seeds draw scores and training together. Run k of `runs` uses its own
    init and data-order streams derived from (seed, k).
    """

    model: str | None = None
    epochs: int | None = None
    seed: int | str = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Proxy:
        options = dict(options or {})
        unknown = sorted(set(options) - {"model", "epochs", "seed"})
        if unknown:
            raise ConfigError(
                f"method.proxy has no option {', '.join(unknown)}; its options: epochs, model, seed"
            )
        check_option_types("method.proxy", options, typing.get_type_hints(cls))
        if isinstance(options.get("seed"), str) and options["seed"] != CELL_SEED:
            raise ConfigError(
                f"method.proxy.seed={options['seed']!r} must be an integer (one draw of the "
                f"scores shared by every cell) or {CELL_SEED} (the cell's seed)"
            )
        return cls(**options)

    def run_seed(self, run: int) -> int:
        if not isinstance(self.seed, int):
            raise RuntimeError(
                f"method.proxy.seed={self.seed} is made the cell's seed by method.resolve(ctx), "
                "which was not called before scoring"
            )
        return derive_seed(self.seed, "proxy-run", run)


def eval_summaries(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example summaries of eval-mode logits [N, K] against labels [N]."""
    probs = logits.double().softmax(dim=1)
    onehot = F.one_hot(y, probs.shape[1]).double()
    top2 = probs.topk(min(2, probs.shape[1]), dim=1).values
    second = top2[:, 1] if top2.shape[1] > 1 else torch.zeros_like(top2[:, 0])
    return {
        "el2n": (probs - onehot).norm(dim=1),
        "p_true": probs.gather(1, y[:, None])[:, 0],
        "entropy": -(probs * probs.clamp_min(1e-300).log()).sum(dim=1),
        "margin": top2[:, 0] - second,
        "least_confidence": 1.0 - top2[:, 0],
        "correct": (probs.argmax(dim=1) == y).double(),
    }


def prob_shift(previous: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum_k p_t,k |log p_t,k - log p_t-1,k| between two epochs' logits [N, K].

    TDDS's per-epoch contribution as its official code computes it: the terms of
    KL(p_t || p_t-1) taken in absolute value, so it is >= that KL and 0 only when
    the softmax did not move.
    """
    log_now = logits.double().log_softmax(dim=1)
    log_before = previous.double().log_softmax(dim=1)
    return (log_now.exp() * (log_now - log_before).abs()).sum(dim=1)


def error_l2(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||softmax - onehot||_2 per example (EL2N), in float64."""
    probs = logits.double().softmax(dim=1)
    return (probs - F.one_hot(y, probs.shape[1]).double()).norm(dim=1)


def prob_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p_y - max_{j != y} p_j of the softmax: the margin CCS's code sums as its AUM."""
    return logit_margin(logits.double().softmax(dim=1), y)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: the margin AUM averages (Pleiss et al. 2020)."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(dim=1).values


class DynamicsRecorder:
    """Collects per-example statistics during one proxy training.

    The eval-mode summaries are always computed from float32 logits, whatever the
    training's autocast: they are differences of small numbers (TDDS, Dyn-Unc, the
    easy end of EL2N), which bf16 would blur.
    """

    def __init__(
        self, source: ExampleSource, eval_batch_size: int, dist: Dist | None = None
    ) -> None:
        n, device = source.n, source.device
        self.source, self.y = source, source.labels
        # data-parallel: every rank records the whole batches and the whole eval pass
        self.dist = dist or Dist(device=device)
        self.eval_batch_size = eval_batch_size
        self.forgetting = torch.zeros(n, dtype=torch.long, device=device)
        self.presentations = torch.zeros(n, dtype=torch.long, device=device)
        self.ever_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.last_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.prob_margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.train_el2n_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.epochs: dict[int, dict[str, torch.Tensor]] = {}
        self.seconds: dict[int, float] = {}
        self.passes: dict[int, Tally] = {}
        self.previous_logits: torch.Tensor | None = None
        self.clock = time.perf_counter()
        self.passes_before, self.passes_start = Tally(), snapshot()

    def on_batch(self, step: int, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        correct = logits.argmax(dim=1) == y
        self.forgetting[idx] += (self.last_correct[idx] & ~correct).long()
        self.last_correct[idx] = correct
        self.ever_correct[idx] |= correct
        self.presentations[idx] += 1
        self.margin_sum[idx] += logit_margin(logits, y).double()
        self.prob_margin_sum[idx] += prob_margin(logits, y)
        self.train_el2n_sum[idx] += error_l2(logits, y)

    def logits(self, model: torch.nn.Module) -> torch.Tensor:
        """Eval-mode float32 logits of every example, autocast off even inside an autocast."""
        with torch.autocast(self.source.device.type, enabled=False):
            return source_logits(
                model, self.source, self.eval_batch_size, amp=False, dist=self.dist
            )

    def passes_so_far(self) -> Tally:
        """Example-passes of the training and its recording so far, every rank's summed."""
        mine = snapshot() - self.passes_start
        return self.passes_before + sum(self.dist.gathered(mine), Tally())

    def on_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        logits = self.logits(model)
        summaries = eval_summaries(logits, self.y)
        before = logits if self.previous_logits is None else self.previous_logits
        summaries["prob_shift"] = prob_shift(before, logits)
        summaries["train_el2n_cum"] = self.train_el2n_sum.clone()
        self.epochs[epoch] = summaries
        self.seconds[epoch] = time.perf_counter() - self.clock
        self.passes[epoch] = self.passes_so_far()
        self.previous_logits = logits

    def arrays(self) -> dict[str, np.ndarray]:
        epochs = sorted(self.epochs)
        out = {"epochs": np.array(epochs), "seconds": np.array([self.seconds[e] for e in epochs])}
        for name in RECORDED_SUMMARIES:
            out[name] = torch.stack([self.epochs[e][name] for e in epochs]).float().cpu().numpy()
        for name in COUNTERS:
            out[name] = getattr(self, name).cpu().numpy()
        return out

    def passes_record(self) -> dict[str, Any]:
        """Example-passes of the training and its recording up to each epoch (by epoch)."""
        return {str(epoch): tally.as_record() for epoch, tally in sorted(self.passes.items())}

    def restore(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], model: torch.nn.Module
    ) -> None:
        """Continue from a stored recording whose training stopped where `model` is now."""
        device = self.y.device
        for name in COUNTERS:
            getattr(self, name).copy_(torch.from_numpy(arrays[name]).to(device))
        for row, epoch in enumerate(arrays["epochs"].tolist()):
            self.epochs[epoch] = {
                name: torch.from_numpy(arrays[name][row]).to(device) for name in RECORDED_SUMMARIES
            }
            self.seconds[epoch] = float(arrays["seconds"][row])
        self.clock = time.perf_counter() - self.seconds[max(self.epochs)]
        self.passes = {int(e): Tally.from_record(t) for e, t in meta["passes"].items()}
        self.previous_logits = self.logits(model)
        # the pass above only resumes the recording: the uninterrupted run does not make it
        self.passes_before, self.passes_start = self.passes[max(self.epochs)], snapshot()

    def state_dict(self) -> dict[str, Any]:
        """Everything the recording carries from step to step, for a preemption checkpoint:
        its sums exactly, the summaries of past epochs as stored (float32). Every rank of a
        data-parallel recording calls it (the passes are summed over the ranks)."""
        return {
            "counters": {name: getattr(self, name) for name in COUNTERS},
            "epochs": {
                epoch: {name: values.float() for name, values in summaries.items()}
                for epoch, summaries in self.epochs.items()
            },
            "seconds": dict(self.seconds),
            "passes": self.passes_record(),
            "passes_so_far": self.passes_so_far().as_record(),
            "previous_logits": self.previous_logits,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a preemption checkpoint's `state_dict()`."""
        device = self.y.device
        for name in COUNTERS:
            getattr(self, name).copy_(state["counters"][name])
        self.epochs = {
            int(epoch): {name: values.to(device).double() for name, values in summaries.items()}
            for epoch, summaries in state["epochs"].items()
        }
        self.seconds = {int(epoch): float(s) for epoch, s in state["seconds"].items()}
        self.clock = time.perf_counter() - self.seconds[max(self.epochs)]
        self.passes = {int(e): Tally.from_record(t) for e, t in state["passes"].items()}
        self.passes_before = Tally.from_record(state["passes_so_far"])
        self.passes_start = snapshot()
        logits = state["previous_logits"]
        self.previous_logits = None if logits is None else logits.to(device)


COUNTERS = (
    "forgetting",
    "presentations",
    "ever_correct",
    "last_correct",
    "margin_sum",
    "prob_margin_sum",
    "train_el2n_sum",
)
# recordings written before the recorder kept its resume state and timings (2), CCS's AUM
# and EL2N sums (3), or its example-passes (4) are redone
RECORDER_VERSION = 4


def train_proxy(
    ctx: ScoreContext,
    proxy: Proxy,
    run: int,
    stop_epoch: int,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    checkpointing: Checkpointing | None = None,
) -> Classifier:
    """Run k of the proxy training up to `stop_epoch` of its schedule; return the model.

    Epoch 0 means the freshly initialised network. The same (proxy, run) always gives
    the same network at the same epoch on CPU, whichever score asks for it; with
    `checkpointing` it continues from the state its caller read (`checkpointing.start`).
    With an active `ctx.dist` (score.proxy_parallel=data) it trains data-parallel over the
    ranks; one device otherwise (a share of `ctx.map_runs` runs `alone`).
    """
    settings = ctx.proxy_settings(proxy.epochs)
    if not 0 <= stop_epoch <= settings.epochs:
        raise ConfigError(
            f"score epoch {stop_epoch} is outside the proxy training's 0..{settings.epochs} epochs"
        )
    seed = proxy.run_seed(run)
    model = ctx.build_model(proxy.model, derive_seed(seed, "init"))
    resuming = checkpointing is not None and checkpointing.start is not None
    if on_epoch is not None and not resuming:
        on_epoch(0, model)
    if stop_epoch > 0:
        total = budget_steps(ctx.n, ctx.n, settings)
        train(
            model,
            ctx.source,
            settings,
            total,
            order_seed=derive_seed(seed, "order"),
            on_batch=on_batch,
            on_epoch=on_epoch,
            stop_step=round(total * stop_epoch / settings.epochs),
            checkpointing=checkpointing,
            dist=ctx.dist,
        )
    model.eval()
    return model


def proxy_material(ctx: ScoreContext, proxy: Proxy, run: int) -> dict[str, Any]:
    """What determines a proxy run's outcome: the cache key of everything derived from it."""
    settings = ctx.proxy_settings(proxy.epochs)
    return {
        "data": ctx.data_fingerprint,
        "labels": ctx.labels_hash,
        "proxy_model": proxy.model or ctx.model_name,
        "proxy_model_options": ctx.model_options if proxy.model in (None, ctx.model_name) else {},
        "settings": settings,
        "augment": ctx.augment.describe(),
        "seed": proxy.seed,
        "run": run,
    }


def proxy_key(ctx: ScoreContext, proxy: Proxy, run: int) -> str:
    """The proxy run's identity in the cost accounting."""
    return content_key(proxy_material(ctx, proxy, run))


@dataclass(frozen=True)
class RecordingFiles:
    """Where a recorded proxy run keeps its summaries, its training states and its networks.

    Two kinds of training state, never one file: `state(e)`, the state where the stored
    recording stopped at epoch e, the point a later score's longer recording continues
    from (named by its epoch, so that a new one never replaces the one the stored
    summaries end at); and `preemption(start, stop)`, the checkpoint that a training
    extending the recording from `start` to `stop` saves when its job is preempted, with
    the recorder's sums, resumed only by that same extension.
    """

    summaries: Path

    def state(self, epoch: int) -> Path:
        return self._beside(f"state-{epoch}.pt")

    def preemption(self, start: int, stop: int) -> Path:
        return self._beside(f"preempt-{start}-{stop}.pt")

    def weights(self, epoch: int) -> Path:
        return self._beside(f"weights-{epoch}.pt")

    @property
    def unversioned_state(self) -> Path:
        """Where recordings made before the two kinds were apart kept their one state."""
        return self._beside("state.pt")

    def training_states(self) -> list[Path]:
        """Every training state and preemption checkpoint of this recording on disk."""
        folder, stem = self.summaries.parent, self.summaries.stem
        return [*folder.glob(f"{stem}.state*.pt"), *folder.glob(f"{stem}.preempt-*.pt")]

    def _beside(self, suffix: str) -> Path:
        return self.summaries.with_name(f"{self.summaries.stem}.{suffix}")


def stop_step(ctx: ScoreContext, proxy: Proxy, epoch: int) -> int:
    """The optimizer step at which proxy training stops after `epoch` epochs of its schedule."""
    settings = ctx.proxy_settings(proxy.epochs)
    return round(budget_steps(ctx.n, ctx.n, settings) * epoch / settings.epochs)


def continuation_point(
    ctx: ScoreContext, proxy: Proxy, files: RecordingFiles, epoch: int
) -> tuple[Path, Mapping[str, Any]] | None:
    """The training state where the stored recording stopped at `epoch`, if one is readable and
    is at that epoch's step; a state at another step (one that a preemption saved there
    before the two files were apart, or a foreign file) is discarded with a warning."""
    expected = stop_step(ctx, proxy, epoch)
    for path in (files.state(epoch), files.unversioned_state):
        state = read_state(path, ctx.device)
        if state is None:
            continue
        step = state.get("step") if isinstance(state, Mapping) else None
        if step == expected and "model" in state:
            return path, state
        log.warning(
            "%s is a training state at step %s, not at the stop of the stored recording "
            "(epoch %d, step %d); it is discarded and this proxy run is trained again",
            path,
            step,
            epoch,
            expected,
        )
        path.unlink(missing_ok=True)
    return None


def recorded_run(
    ctx: ScoreContext, proxy: Proxy, run: int, stop_epoch: int, weights_at: tuple[int, ...] = ()
) -> tuple[dict[str, np.ndarray], dict[str, Any], RecordingFiles]:
    """Proxy run `run` recorded at least up to `stop_epoch`, with its network kept at each
    epoch of `weights_at`: from the cache, by continuing a shorter stored recording, or
    (only when an earlier epoch's network was not kept) by training it again. With
    `ctx.data_parallel`, every rank takes part in the training (`_recorded_over_ranks`)."""
    settings = ctx.proxy_settings(proxy.epochs)
    if not 0 <= stop_epoch <= settings.epochs:
        raise ConfigError(
            f"score epoch {stop_epoch} is outside the proxy training's 0..{settings.epochs} epochs"
        )
    material = proxy_material(ctx, proxy, run)
    files = RecordingFiles(ctx.store.path("dynamics", material))
    asked = {e for e in weights_at if e > 0}

    def sufficient(meta: dict[str, Any]) -> bool:
        return (
            meta.get("recorder") == RECORDER_VERSION
            and meta["stop_epoch"] >= stop_epoch
            and set(meta.get("summaries", ())) >= set(RECORDED_SUMMARIES)
            and asked <= set(meta["weights_epochs"])
            and all(files.weights(e).exists() for e in asked)
        )

    def decide() -> tuple[RecordingOrder, Mapping[str, Any] | None, Continuation | None]:
        found = read_artifact(files.summaries)
        previous = None
        stop, keep = stop_epoch, set(asked)
        if found is not None and found[1].get("recorder") == RECORDER_VERSION:
            stored_stop = found[1]["stop_epoch"]
            stop = max(stop, stored_stop)
            keep |= set(found[1]["weights_epochs"])
            on_disk = {e for e in found[1]["weights_epochs"] if files.weights(e).exists()}
            if stored_stop > 0 and min(asked - on_disk, default=stop) > stored_stop:
                point = continuation_point(ctx, proxy, files, stored_stop)
                if point is not None:
                    previous = Continuation(*found, stored_stop, on_disk, *point)
        keep |= {e for e in (*ctx.keep_weights_at, settings.epochs, stop) if 0 < e <= stop}
        return _order(ctx, proxy, files, stop, sorted(keep), previous)

    if ctx.data_parallel:
        arrays, meta = _recorded_over_ranks(ctx, proxy, run, files, material, sufficient, decide)
    else:
        arrays, meta = ctx.store.load_or_compute(
            "dynamics", material, lambda: _record(ctx, proxy, run, files, *decide()), sufficient
        )
    (row,) = np.flatnonzero(arrays["epochs"] == stop_epoch)
    ctx.cost.need(
        content_key(material),
        stop_epoch,
        float(arrays["seconds"][row]),
        Tally.from_record(meta["passes"][str(stop_epoch)]),
    )
    return arrays, meta, files


@dataclass(frozen=True)
class Continuation:
    """A stored recording to extend: its summaries and metadata, the epoch it stopped at, the
    epochs whose networks are on disk, and the training state at its stop (read and checked)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    epoch: int
    kept: set[int]
    state_path: Path
    state: Mapping[str, Any]


@dataclass(frozen=True)
class RecordingOrder:
    """What a recording trains, decided by the one writer and followed by every rank: from
    `start_epoch` to `stop_epoch`, keeping the networks at `keep`, starting `fresh`, from
    the preemption checkpoint of this extension (`preempted`) or from the stored
    recording's stop state (`continued`, whose kept networks are `kept`), read at
    `state_path`."""

    start_epoch: int
    stop_epoch: int
    keep: tuple[int, ...]
    resume: str = "fresh"
    state_path: str | None = None
    kept: tuple[int, ...] = ()


def _order(
    ctx: ScoreContext,
    proxy: Proxy,
    files: RecordingFiles,
    stop_epoch: int,
    keep: list[int],
    previous: Continuation | None,
) -> tuple[RecordingOrder, Mapping[str, Any] | None, Continuation | None]:
    """Where the recording to `stop_epoch` starts (run by its writer, under the recording's
    lock): a preemption checkpoint of this same extension is resumed; the training states
    that it does not start from are stale and removed. Returns the order, the state it
    starts from (read and checked) and the recording it continues."""
    start_epoch = 0 if previous is None else previous.epoch
    preemption = files.preemption(start_epoch, stop_epoch)
    for path in files.training_states():
        if path not in (preemption, previous and previous.state_path):
            path.unlink(missing_ok=True)
    fresh = RecordingOrder(start_epoch, stop_epoch, tuple(keep))
    start = _preempted(ctx, proxy, preemption, start_epoch, stop_epoch)
    if start is not None:
        return (
            dataclasses.replace(fresh, resume="preempted", state_path=str(preemption)),
            start,
            previous,
        )
    if previous is not None:
        order = dataclasses.replace(
            fresh,
            resume="continued",
            state_path=str(previous.state_path),
            kept=tuple(sorted(previous.kept)),
        )
        return order, previous.state, previous
    return fresh, None, None


def _record(
    ctx: ScoreContext,
    proxy: Proxy,
    run: int,
    files: RecordingFiles,
    order: RecordingOrder,
    start: Mapping[str, Any] | None,
    previous: Continuation | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train (or continue) proxy run `run` as `order` says, under the recorder, from `start`
    (the state read at `order.state_path`). Only the writer (rank 0, or the one device)
    writes the recording's networks and training states."""
    writes = ctx.dist.writer
    settings = ctx.proxy_settings(proxy.epochs)
    recorder = DynamicsRecorder(ctx.source, settings.eval_batch_size, ctx.dist)
    kept: set[int] = set()
    if order.resume == "preempted":
        recorder.load_state_dict(start["recording"])
        kept = set(start["recording"]["kept"])
    elif order.resume == "continued":
        kept = set(order.kept)
        stored = ctx.build_model(proxy.model, 0)
        stored.load_state_dict(start["model"])
        recorder.restore(previous.arrays, previous.meta, stored)

    def on_epoch(epoch: int, model: torch.nn.Module) -> None:
        recorder.on_epoch(epoch, model)
        if epoch in order.keep:
            if writes:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                atomic_write(files.weights(epoch), lambda f: torch.save(state, f))
            kept.add(epoch)

    preemption = files.preemption(order.start_epoch, order.stop_epoch)
    stop_epoch = order.stop_epoch
    checkpointing = Checkpointing(
        preemption,
        every_steps=0,
        start=start,
        stop_path=files.state(stop_epoch) if stop_epoch > 0 else None,
        extra=lambda: {"recording": {**recorder.state_dict(), "kept": sorted(kept)}},
    )
    train_proxy(ctx, proxy, run, stop_epoch, recorder.on_batch, on_epoch, checkpointing)
    if writes:
        preemption.unlink(missing_ok=True)
    if order.start_epoch == 0 and stop_epoch > 0:
        ctx.cost.trainings_run += 1
    ctx.cost.epochs_run += stop_epoch - order.start_epoch
    meta = {
        "recorder": RECORDER_VERSION,
        "stop_epoch": stop_epoch,
        "weights_epochs": sorted(kept),
        "summaries": list(RECORDED_SUMMARIES),
        "passes": recorder.passes_record(),
        "world_size": ctx.dist.world,
    }
    return recorder.arrays(), meta


def _recorded_over_ranks(
    ctx: ScoreContext,
    proxy: Proxy,
    run: int,
    files: RecordingFiles,
    material: Mapping[str, Any],
    sufficient: Callable[[dict[str, Any]], bool],
    decide: Callable[[], tuple[RecordingOrder, Mapping[str, Any] | None, Continuation | None]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Proxy run `run` recorded by a training data-parallel over all ranks.

    Rank 0 looks for the recording under its lock, as one device does, and sends the others
    its order (what to train, from which state), or None when the stored one suffices; every
    rank then trains its slice of each global batch and records the whole batches, and rank 0
    alone writes the recording. The others read what it wrote: `cache.dir` must be one folder
    every rank reads (the score cache's being on is checked before the cell starts; a file a
    rank cannot read stops it with one line).
    """
    dist = ctx.dist
    key = f"scores/dynamics/{run}"
    if dist.writer:
        told = False

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            nonlocal told
            order, start, previous = decide()
            dist.from_writer(key, lambda: order)
            told = True
            return _record(ctx, proxy, run, files, order, start, previous)

        arrays, meta = ctx.store.load_or_compute("dynamics", material, compute, sufficient)
        if not told:
            dist.from_writer(key, lambda: None)
        dist.from_writer(f"{key}/stored", lambda: None)
        return arrays, meta
    order = dist.from_writer(key, lambda: None)
    if order is not None:
        start = previous = None
        if order.state_path is not None:
            start = read_state(Path(order.state_path), ctx.device)
            if start is None:
                raise RuntimeError(_unshared(dist, order.state_path))
        if order.resume == "continued":
            found = read_artifact(files.summaries)
            if found is None:
                raise RuntimeError(_unshared(dist, files.summaries))
            previous = Continuation(
                *found, order.start_epoch, set(order.kept), Path(order.state_path), start
            )
        _record(ctx, proxy, run, files, order, start, previous)
    dist.from_writer(f"{key}/stored", lambda: None)
    found = ctx.store.find("dynamics", material, sufficient)
    if found is None:
        raise RuntimeError(_unshared(dist, files.summaries))
    return found


def _unshared(dist: Dist, path: Path | str) -> str:
    """Why a rank of a proxy run trained over all ranks stops: a file of it is unreadable."""
    return (
        f"rank {dist.rank} of {dist.world} cannot read {path}, written by rank 0 for a proxy "
        "run trained over all ranks: score.proxy_parallel=data needs cache.dir to be one "
        "folder that every rank reads (a damaged file is trained again by the rerun)"
    )


def _preempted(
    ctx: ScoreContext, proxy: Proxy, path: Path, start_epoch: int, stop_epoch: int
) -> Mapping[str, Any] | None:
    """The preemption checkpoint of this extension, if readable and between its two ends."""
    state = read_state(path, ctx.device)
    if state is None:
        return None
    first, last = stop_step(ctx, proxy, start_epoch), stop_step(ctx, proxy, stop_epoch)
    if (
        isinstance(state, Mapping)
        and isinstance(state.get("recording"), Mapping)
        and isinstance(state.get("step"), int)
        and first < state["step"] <= last
    ):
        return state
    set_aside(path, "not a preemption checkpoint of this proxy training")
    return None


def read_network(
    ctx: ScoreContext, files: RecordingFiles, epoch: int, record_again: Callable[[], Any]
) -> dict[str, torch.Tensor]:
    """The network a recording kept at `epoch`; a file found unreadable (set aside) is made
    again by `record_again()` (the recorded run asked once more, which retrains it)."""
    state = read_state(files.weights(epoch), ctx.device)
    if state is None and ctx.data_parallel:  # training it again alone would leave the others
        raise RuntimeError(_unshared(ctx.dist, files.weights(epoch)))
    if state is None:
        record_again()
        state = read_state(files.weights(epoch), ctx.device)
    if state is None:
        raise RuntimeError(f"{files.weights(epoch)} is unreadable after it was made again")
    return state


def dynamics(ctx: ScoreContext, proxy: Proxy, run: int, stop_epoch: int) -> dict[str, np.ndarray]:
    """Proxy run `run` recorded at least up to `stop_epoch`, from the cache when possible."""
    return recorded_run(ctx, proxy, run, stop_epoch)[0]


def proxy_network(
    ctx: ScoreContext, proxy: Proxy, run: int, epoch: int
) -> tuple[Classifier, dict[str, Any]]:
    """The network of proxy run `run` after `epoch` epochs (eval mode), the recorded training's,
    and what it cost: the proxy run's key, the epoch, and the seconds and example-passes its
    training took to get there, for scores cached without the recording (GraNd, features)
    to restate."""
    model = ctx.build_model(proxy.model, derive_seed(proxy.run_seed(run), "init"))
    seconds, passes = 0.0, {}
    if epoch > 0:
        arrays, meta, files = recorded_run(ctx, proxy, run, epoch, weights_at=(epoch,))
        model.load_state_dict(
            read_network(
                ctx, files, epoch, lambda: recorded_run(ctx, proxy, run, epoch, weights_at=(epoch,))
            )
        )
        seconds = float(arrays["seconds"][np.flatnonzero(arrays["epochs"] == epoch)[0]])
        passes = meta["passes"][str(epoch)]
    cost = {
        "proxy": proxy_key(ctx, proxy, run),
        "proxy_epoch": epoch,
        "proxy_seconds": seconds,
        "proxy_passes": passes,
    }
    return model.eval(), cost


Rows = Callable[[Classifier], dict[str, torch.Tensor]]


def derived_artifact(
    ctx: ScoreContext,
    kind: str,
    material: Mapping[str, Any],
    proxy: Proxy,
    run: int,
    epoch: int,
    rows: Rows,
    sufficient: Callable[[dict[str, Any]], bool] | None = None,
    stated: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A score artifact of one pass over the data by proxy run `run`'s network at `epoch`
    (GraNd's norms, features): `rows(model)` computes its per-example arrays through
    `ctx.sharded_rows`, so that on several ranks each computes its shard of the examples.

    On several ranks, the run's owner (rank run % world, which trained it in
    `prepare_networks`) looks for the stored artifact and otherwise reads the network;
    the others wait for it on the store. Every rank then passes over its shard, and the
    owner alone writes the artifact: no two ranks ever write the same file, and no rank
    holds a lock while the others are in a collective with it. `stated`: what the artifact
    says besides its cost (which outputs it holds).
    """
    sufficient = sufficient or derived_sufficient
    dist = ctx.dist

    def computed(model: Classifier) -> dict[str, np.ndarray]:
        return {name: values.numpy() for name, values in rows(model).items()}

    if not dist.active:

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            model, cost = proxy_network(ctx, proxy, run, epoch)
            work = OwnWork()
            arrays = computed(model)
            return arrays, {**cost, **work.meta(), **(stated or {})}

        return ctx.store.load_or_compute(kind, material, compute, sufficient)

    owner = run % dist.world

    def on_owner() -> tuple[Any, Any]:
        found = ctx.store.find(kind, material, sufficient)
        if found is not None:
            return found, None
        with ctx.alone():  # the others wait on the store: no collective here
            model, cost = proxy_network(ctx, proxy, run, epoch)
        return None, (cost, {k: v.cpu() for k, v in model.state_dict().items()})

    found, network = dist.from_rank(owner, f"scores/{kind}", on_owner)
    if found is not None:
        return found
    cost, state = network
    model = ctx.build_model(proxy.model, 0)
    model.load_state_dict(state)
    model.eval()
    work = OwnWork()
    arrays = computed(model)
    shares = dist.gathered(work.meta())  # every rank's seconds and passes of its shard
    passes = sum((Tally.from_record(share["passes"]) for share in shares), Tally())
    meta = {
        **cost,
        "seconds": sum(share["seconds"] for share in shares),
        "passes": passes.as_record(),
        **(stated or {}),
        "kind": kind,
        "material": dict(material),
    }
    ctx.spread.sharded_passes += 1
    if dist.rank == owner:
        ctx.store.save(kind, material, arrays, meta)
    return arrays, meta


def prepare_networks(
    ctx: ScoreContext,
    proxy: Proxy,
    runs: int,
    epoch: int,
    stored: Callable[[int], bool],
    weights_at: tuple[int, ...] | None = None,
) -> None:
    """Train the proxy runs whose networks at `epoch` (or at each epoch of `weights_at`, a
    recording to `epoch`) a pass will read, over the ranks (`ctx.map_runs`: spread, or each
    data-parallel), before the passes: a run whose artifact is `stored(run)` needs none. One
    device trains each when its pass asks for it."""
    if not ctx.dist.active:
        return
    wanted = None
    if ctx.data_parallel:  # every rank trains the same runs: rank 0 decides which
        wanted = ctx.dist.from_writer(
            "scores/prepare", lambda: [k for k in range(runs) if not stored(k)]
        )

    def prepare(run: int) -> None:
        if epoch > 0 and (run in wanted if wanted is not None else not stored(run)):
            if weights_at is None:
                proxy_network(ctx, proxy, run, epoch)
            else:
                recorded_run(ctx, proxy, run, epoch, weights_at)

    ctx.map_runs(prepare, runs)


def own_artifacts(ctx: ScoreContext, fn: Callable[[int], T], runs: int) -> list[T]:
    """`ctx.map_runs(fn, runs)` for a method whose fn(k) computes an artifact of its own under
    its lock (DeepFool's and VoG's passes) from networks that `prepare_networks` trained.

    With the proxy runs trained over all ranks, every rank asks for each artifact `alone`:
    the first to hold the lock computes it, the others read it; a rank in a collective
    under that lock would wait for one blocked on it.
    """
    if not ctx.data_parallel:
        return ctx.map_runs(fn, runs)
    with ctx.alone():
        return ctx.map_runs(fn, runs)


def derived_sufficient(meta: Mapping[str, Any]) -> bool:
    """A score artifact derived from a proxy network states that network's cost in seconds
    and example-passes (older ones are recomputed from the recorded training's)."""
    return "proxy" in meta and "passes" in meta and "proxy_passes" in meta


class OwnWork:
    """The seconds and example-passes of a score's own passes over the data (GraNd's
    gradients, feature extraction), from its creation to `meta()`."""

    def __init__(self) -> None:
        self.clock, self.passes = time.perf_counter(), snapshot()

    def meta(self) -> dict[str, Any]:
        return {
            "seconds": time.perf_counter() - self.clock,
            "passes": (snapshot() - self.passes).as_record(),
        }


def restate_cost(ctx: ScoreContext, meta: Mapping[str, Any]) -> None:
    """Add to the context's cost what a score derived from a proxy network needed."""
    ctx.cost.need(
        meta["proxy"],
        int(meta["proxy_epoch"]),
        float(meta["proxy_seconds"]),
        Tally.from_record(meta["proxy_passes"]),
    )
    ctx.cost.seconds += float(meta["seconds"])
    ctx.cost.passes = ctx.cost.passes + Tally.from_record(meta["passes"])


def at_epoch(arrays: Mapping[str, np.ndarray], name: str, epoch: int) -> np.ndarray:
    """One eval summary at one recorded epoch."""
    (where,) = np.flatnonzero(arrays["epochs"] == epoch)
    return arrays[name][where].astype(np.float64)
