"""The trainer: SGD on the examples of an ExampleSource, with an explicit step budget.

The plan (which examples each step trains on) is the trainer's; the source turns a
step's indices into images under the training transform (in memory: an index gather
and batched tensor augmentation; streamed: read, decode, crop); normalisation happens
inside the model. Data order and augmentation come
from streams seeded per pass and per step, so a run is reproducible on CPU and
can resume at any step without replaying random state.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import compute
from benchmarks.atomic import atomic_write
from benchmarks.data.source import ExampleSource
from benchmarks.distributed import Dist
from benchmarks.errors import ConfigError, RunDiverged
from benchmarks.preemption import PreemptionGuard
from benchmarks.seeding import derive_seed
from benchmarks.state_files import read_state, set_aside

logger = logging.getLogger(__name__)

SCHEDULES = ("step", "cosine", "onecycle", "constant")
BUDGETS = ("iterations", "epochs")


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    gamma: float = 0.2
    label_smoothing: float = 0.0
    budget: str = "iterations"
    eval_batch_size: int = 1024
    eval_every_epoch: bool = True
    amp: bool = True
    channels_last: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(cfg).items() if k in known}
        if "milestones" in values:
            values["milestones"] = tuple(float(m) for m in values["milestones"])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"train.schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}"
            )
        if self.budget not in BUDGETS:
            raise ConfigError(f"train.budget={self.budget!r} is not one of {', '.join(BUDGETS)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 1")
        for name, allowed, inside in (
            ("lr", "> 0", lambda v: v > 0),
            ("gamma", "in (0, 1]", lambda v: 0 < v <= 1),
            ("momentum", "in [0, 1)", lambda v: 0 <= v < 1),
            ("weight_decay", ">= 0", lambda v: v >= 0),
            ("label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and inside(value)):
                raise ConfigError(f"train.{name}={value} must be a finite number {allowed}")
        if not all(0 < m < 1 for m in self.milestones):
            raise ConfigError(f"train.milestones={list(self.milestones)} must lie in (0, 1)")


def steps_per_pass(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def budget_steps(n_train: int, n_full: int, settings: TrainSettings) -> int:
    """Optimizer steps for training on `n_train` of `n_full` examples.

    `iterations`: as many steps as training on all `n_full` examples for `epochs`
    (the Data Diet protocol); `epochs`: `epochs` passes over the `n_train` kept ones.
    """
    n = n_full if settings.budget == "iterations" else n_train
    return settings.epochs * steps_per_pass(n, settings.batch_size)


def lr_factor(step: int, total: int, settings: TrainSettings) -> float:
    """Learning-rate multiplier at `step` (0-based) of `total` steps."""
    return lr_factor_at(step / total, settings)


def lr_factor_at(progress: float, settings: TrainSettings) -> float:
    """Learning-rate multiplier when `progress` (0..1) of the schedule is done."""
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "step":
        return settings.gamma ** sum(progress >= m for m in settings.milestones)
    if settings.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return _one_cycle(progress)


def _one_cycle(
    progress: float, warm: float = 0.3, start: float = 1 / 25, end: float = 1 / 25e4
) -> float:
    """torch's OneCycleLR shape: cosine up from lr/25 over 30% of steps, then down to lr/25e4."""
    if progress < warm:
        return _cosine_between(start, 1.0, progress / warm)
    return _cosine_between(1.0, end, (progress - warm) / (1 - warm))


def _cosine_between(a: float, b: float, t: float) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * t)) / 2


@dataclass
class EpochLog:
    epoch: int
    step: int
    lr: float
    train_loss: float
    train_acc: float
    seconds: float
    eval: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        row = {
            k: getattr(self, k)
            for k in ("epoch", "step", "lr", "train_loss", "train_acc", "seconds")
        }
        row.update(self.eval)
        return row


BatchHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
EpochHook = Callable[[int, nn.Module], None]
LogHook = Callable[["EpochLog"], None]
EvalFn = Callable[[nn.Module], dict[str, float]]


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; plain float32 elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prepare_model(model: nn.Module, device: torch.device, settings: TrainSettings) -> nn.Module:
    """Move the model to its device; on CUDA, set its memory format and cuDNN's autotuner."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


def training_forward(model: nn.Module, settings: TrainSettings) -> nn.Module:
    """The module the training step calls: `model` itself, or its torch.compile'd form.

    The compiled form shares `model`'s parameters and buffers, so evaluation, scoring
    hooks and checkpoints keep using the plain module.
    """
    return torch.compile(model) if settings.compile else model


def batch_order(
    n: int,
    total_steps: int,
    batch_size: int,
    order_seed: int,
    device: torch.device,
    start_step: int = 0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (step, index batch) from `start_step` to `total_steps`: a fresh permutation per pass.

    Each pass's permutation depends only on (order_seed, pass), so a resumed run sees
    exactly the batches an uninterrupted one would.
    """
    per_pass = steps_per_pass(n, batch_size)
    step = start_step
    while step < total_steps:
        pass_no, position = divmod(step, per_pass)
        gen = torch.Generator().manual_seed(derive_seed(order_seed, "pass", pass_no))
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(position * batch_size, n, batch_size):
            if step >= total_steps:
                return
            yield step, perm[start : start + batch_size]
            step += 1


@dataclass(frozen=True)
class LossWeights:
    """Per-example loss weights of a static training set (weighted coresets: CRAIG, GradMatch).

    `values[i]` weighs row i of the trainer's (x, y). The batch loss is mean_b w_b l_b; with
    `batch_normalise`, each batch's weights are first divided by their batch mean, so the
    loss is sum_b w_b l_b / sum_b w_b (DeepCore's weighted training); with
    `batch_mean_scale`, the batch's mean loss is multiplied by its weights' mean,
    mean_b l_b x mean_b w_b (TDDS's train_subset.py: criterion(output, y) * sum(s) / n).
    """

    values: torch.Tensor
    batch_normalise: bool = False
    batch_mean_scale: bool = False

    def __post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(
                f"loss weights must be one per example, got shape {tuple(self.values.shape)}"
            )
        if not bool(torch.isfinite(self.values).all()) or bool((self.values < 0).any()):
            raise ValueError("loss weights must be finite and >= 0")
        if self.batch_normalise and self.batch_mean_scale:
            raise ValueError("batch_normalise and batch_mean_scale are two different losses")


def weighted_batch_loss(
    losses: torch.Tensor,
    weights: torch.Tensor | None,
    batch_normalise: bool = False,
    batch_mean_scale: bool = False,
    dist: Dist | None = None,
    batch: int = 0,
) -> torch.Tensor:
    """The loss one SGD step minimises: mean_b w_b l_b (plain mean without weights;
    `batch_mean_scale`: mean_b l_b x mean_b w_b, see `LossWeights`).

    The one place where per-example weights enter training, for static subsets and
    dynamic samplers (InfoBatch's rescaling) alike. With an active `dist`, `losses` are
    this rank's slice of the global batch of `batch` rows, whose `weights` are all given
    (their normalisation is the global batch's): the result is
    this rank's part of the global loss times the world size, so that DDP's mean of the
    ranks' gradients is the gradient of the global batch's loss, slices equal or not.
    """
    if dist is not None and dist.active:
        return _rank_part_of_loss(losses, weights, batch_normalise, batch_mean_scale, dist, batch)
    if weights is None:
        return losses.mean()
    weights = weights.to(losses.dtype)
    if batch_mean_scale:
        return losses.mean() * weights.mean()
    if batch_normalise:
        weights = weights / weights.mean().clamp_min(torch.finfo(losses.dtype).tiny)
    return (losses * weights).mean()


def _rank_part_of_loss(
    losses: torch.Tensor,
    weights: torch.Tensor | None,
    batch_normalise: bool,
    batch_mean_scale: bool,
    dist: Dist,
    batch: int,
) -> torch.Tensor:
    scale = dist.world / batch
    if weights is None:
        return losses.sum() * scale
    weights = weights.to(losses.dtype)
    if batch_mean_scale:
        return losses.sum() * scale * weights.mean()
    if batch_normalise:
        weights = weights / weights.mean().clamp_min(torch.finfo(losses.dtype).tiny)
    return (losses * dist.shard(weights)).sum() * scale


@dataclass
class Checkpointing:
    """Where and how often the trainer saves its full state, to resume after preemption.

    Besides every `every_steps` steps (0: never), the state is saved at `path` at the end of
    the step in which the job's preemption signal arrives (see benchmarks/preemption.py),
    and a run finding a readable state there resumes from it (an unreadable one is set
    aside, see benchmarks/state_files.py). `resumed_from_step` is set by the trainer when it
    resumes, so that the record says the run was resumed (0: trained from the start). A save
    that fails (a full disk) is warned about once and training goes on: the run loses only
    its resumability.

    A proxy training continued later has two more: `start`, a state its caller already read
    and checked, to start from instead of `path`'s (the point a stored training stopped);
    and `stop_path`, where the state is saved when training stops, as the next
    continuation's point. That file is never the preemption checkpoint, so a preemption
    cannot move the point a recording continues from. `extra()` returns what else a
    preemption checkpoint holds (the recorder's sums), returned with the state on resumption;
    data-parallel, every rank calls it (it may sum over the ranks) and rank 0 saves it.
    """

    path: Path
    every_steps: int
    resumed_from_step: int = 0
    save_failed: bool = False
    start: Mapping[str, Any] | None = None
    stop_path: Path | None = None
    extra: Callable[[], Mapping[str, Any]] | None = None


def train(
    model: nn.Module,
    source: ExampleSource,
    settings: TrainSettings,
    total_steps: int,
    order_seed: int,
    evaluate: EvalFn | None = None,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    on_log: LogHook | None = None,
    progress: bool = False,
    desc: str = "train",
    stop_step: int | None = None,
    checkpointing: Checkpointing | None = None,
    sampler: PassSampler | None = None,
    weights: LossWeights | None = None,
    dist: Dist | None = None,
) -> list[EpochLog]:
    """Train `model` in place for `total_steps` SGD steps on `source`; return per-epoch logs.

    An "epoch" of the log is `total_steps / settings.epochs` steps, so curves of runs
    on differently pruned sets line up on the same axis. `on_batch(step, idx, logits, y)`
    sees each mini-batch's training-mode logits before the update (forgetting, AUM);
    `on_epoch(epoch, model)` runs after each epoch (EL2N at epoch t); `on_log(log)` gets
    each epoch's finished log, evaluation included (live curves). `stop_step` ends
    training early while keeping the schedule of `total_steps` (a proxy scored at epoch t
    of a longer training, as Data Diet does). With `checkpointing`, the state is saved
    every `every_steps` steps and at a preemption signal, and a run finding a checkpoint
    resumes from it, ending with bitwise the same model on CPU. With a `sampler`, the
    examples of every pass are redrawn by it (dynamic pruning) instead of being all of
    `source`; its state and the pass in progress are checkpointed with the rest. With
    `weights`, each example's loss is weighted (a weighted subset); a sampler weights its
    own losses. With an active `dist` (data-parallel), every rank follows the same plan of
    global batches and trains on its slice of each through DDP: the same steps, schedule,
    augmentation, losses and sampler decisions as on one device (the sampler sees the
    global batch's losses, `on_batch` the global batch's logits, `on_epoch` every rank
    with rank 0's buffers); rank 0 alone saves checkpoints, and a preemption signal on any
    rank stops every rank at the same step.
    """
    run_steps = total_steps if stop_step is None else min(stop_step, total_steps)
    device = source.device
    dist = dist or Dist(device=device)
    if weights is not None:
        if sampler is not None:
            raise ValueError("a dynamic sampler weights its own losses; pass no static weights")
        if weights.values.shape[0] != source.n:
            raise ValueError(f"{weights.values.shape[0]} loss weights for {source.n} examples")
        weight_values = weights.values.to(device)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        nesterov=settings.nesterov and settings.momentum > 0,
    )
    state = _TrainState(device, dist)
    resumed: Mapping[str, Any] = {}
    if checkpointing is not None:
        resumed = _resume(checkpointing, state, model, optimizer, sampler, dist)
        if checkpointing.resumed_from_step:
            logger.info(
                "%straining resumes from step %d (%s)",
                f"rank {dist.rank} of {dist.world}: " if dist.active else "",
                state.step,
                checkpointing.path,
            )
    clock = time.perf_counter() - state.elapsed
    if sampler is None:
        plan: Iterable[PlanStep] = _static_plan(
            source.n, total_steps, run_steps, settings, order_seed, device, state.step
        )
    else:
        plan = _DynamicPlan(
            sampler, total_steps, settings, order_seed, device, resumed.get("cursor")
        )
    bar = _progress_bar(run_steps, desc, progress, initial=state.step)

    def step_seed(step: int) -> int:
        return derive_seed(order_seed, "augment", step)

    def rank_part(idx: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """This rank's slice of the global batch `idx` and its (first row, total)."""
        if not dist.active:
            return idx, None
        return dist.shard(idx), (dist.shard_bounds(idx.numel())[0], idx.numel())

    forward = training_forward(dist.ddp(model), settings)
    with PreemptionGuard(active=checkpointing is not None) as guard:
        # the source reads (ahead) only this rank's slice of each global batch `idx`
        batches = source.prefetch(plan, step_seed, read_ahead=sampler is None, shard=rank_part)
        for step, idx, fraction_done, epochs_ended in batches:
            guard.step = step
            lr = settings.lr * lr_factor_at(fraction_done, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            local, rows = rank_part(idx)
            inputs = source.train_batch(local, step_seed(step), rows)
            if device.type == "cuda" and settings.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            targets = source.labels[local]
            with autocast_for(device, settings.amp):
                logits = forward(inputs)
                losses = F.cross_entropy(
                    logits.float(),
                    targets,
                    label_smoothing=settings.label_smoothing,
                    reduction="none",
                )
            if on_batch is not None:  # data-parallel: the global batch's, on every rank
                batch_logits = dist.gather_rows(logits.detach().float(), idx.numel())
                on_batch(step, idx, batch_logits, source.labels[idx])
            if sampler is not None:
                sampler.observe(idx, dist.gather_rows(losses.detach(), idx.numel()))
                loss = weighted_batch_loss(
                    losses, sampler.loss_weights(idx), dist=dist, batch=idx.numel()
                )
            else:
                batch_weights = None if weights is None else weight_values[idx]
                normalise = weights is not None and weights.batch_normalise
                scale = weights is not None and weights.batch_mean_scale
                loss = weighted_batch_loss(
                    losses, batch_weights, normalise, scale, dist, idx.numel()
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.compile and getattr(model, "network", None):
                # a compiled forward does not run the network's own counting
                compute.COUNT.add(model.network, forward=len(idx), backward=len(idx))
            optimizer.step()
            state.accumulate(losses.detach().mean(), logits.detach(), targets)
            state.step = step + 1
            if bar is not None:
                bar.update(1)
            for _ in range(epochs_ended):
                log = state.close_epoch(lr, time.perf_counter() - clock)
                if on_epoch is not None:
                    dist.sync_buffers(model)  # every rank passes over the same network
                    on_epoch(log.epoch, model)
                if evaluate is not None and (
                    settings.eval_every_epoch or log.epoch == settings.epochs
                ):
                    dist.sync_buffers(model)
                    log.eval = evaluate(model)
                    model.train()
                if on_log is not None:
                    on_log(log)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{log.train_loss:.3f}",
                        **{k: f"{v:.3f}" for k, v in log.eval.items() if "acc" in k},
                    )
            every = 0 if checkpointing is None else checkpointing.every_steps
            saved = False
            if dist.active and guard.active and dist.any(guard.requested):
                guard.request(step)  # every rank stops at the step some rank was signalled in
            at_stop = (
                checkpointing is not None
                and checkpointing.stop_path is not None
                and state.step == run_steps
            )
            periodic = every and state.step % every == 0 and state.step < run_steps
            if guard.requested or periodic or at_stop:
                state.elapsed = time.perf_counter() - clock
                state.merge_ranks()
                dist.sync_buffers(model)
                if dist.writer and at_stop:
                    stop_path = checkpointing.stop_path
                    _save_checkpoint(
                        checkpointing, state, model, optimizer, sampler, plan, {}, stop_path
                    )
                if guard.requested or periodic:
                    # every rank takes part in extra() (a recorder sums the ranks' counts)
                    extra = checkpointing.extra() if checkpointing.extra is not None else {}
                    if dist.writer:
                        saved = _save_checkpoint(
                            checkpointing, state, model, optimizer, sampler, plan, extra
                        )
            if guard.requested:
                dist.barrier()  # the checkpoint is on disk before any rank leaves
                logger.warning(
                    "signal %s arrived in step %d: training state %s at step %d (%s); "
                    "the job's handler takes over",
                    guard.signum.name,
                    guard.arrived_at_step,
                    "saved" if saved else "NOT saved" if dist.writer else "saved by rank 0",
                    state.step,
                    checkpointing.path,
                )
                guard.hand_over()
                if dist.active:  # submitit's handler requeues from rank 0 and returns on others
                    raise SystemExit(-1)
    dist.sync_buffers(model)
    _close(bar)
    return state.logs


PlanStep = tuple[int, torch.Tensor, float, int]
Plan = Iterator[PlanStep]


def _save_checkpoint(
    checkpointing: Checkpointing,
    state: _TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: PassSampler | None,
    plan: Iterable[PlanStep],
    extra: Mapping[str, Any],
    path: Path | None = None,
) -> bool:
    """Save the training state and `extra` (at the checkpoint's path unless `path`, the stop
    point, is given); on failure warn once and let training go on."""
    extra = dict(extra)
    if isinstance(plan, _DynamicPlan) and sampler is not None:
        extra.update({"sampler": sampler.state_dict(), "cursor": plan.cursor})
    path = path or checkpointing.path
    try:
        state.save(path, model, optimizer, extra)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        if not checkpointing.save_failed:
            logger.warning(
                "cannot save the checkpoint %s (%s); training goes on, but an interruption "
                "now resumes from the last checkpoint saved (this is said once)",
                path,
                str(err).splitlines()[0] if str(err) else type(err).__name__,
            )
        checkpointing.save_failed = True
        return False
    return True


def _static_plan(
    n: int,
    total_steps: int,
    run_steps: int,
    settings: TrainSettings,
    order_seed: int,
    device: torch.device,
    start_step: int,
) -> Plan:
    """(step, batch, fraction of the schedule done, epochs ending here) for a fixed subset.

    An epoch of the log is `total_steps / epochs` steps, so that curves of runs on
    differently pruned sets line up on the same axis.
    """
    boundaries = [round(total_steps * e / settings.epochs) for e in range(1, settings.epochs + 1)]
    ended = sum(b <= start_step for b in boundaries)
    for step, idx in batch_order(n, run_steps, settings.batch_size, order_seed, device, start_step):
        now = sum(b <= step + 1 for b in boundaries)
        yield step, idx, step / total_steps, now - ended
        ended = now


class _DynamicPlan:
    """Batches of a subset that the sampler redraws every pass (dynamic pruning).

    Budget `epochs`: `settings.epochs` passes, the schedule advancing by passes (the
    methods' own protocol: same epochs, fewer steps); budget `iterations`: passes until
    the full-data step count `total_steps`, the schedule advancing by steps. `cursor` is
    where the plan stands after the batch it yielded last (the pass, the order drawn for it
    and the next batch in it): saved with the sampler's state, a run resumes at any step
    with exactly the batches an uninterrupted one sees.
    """

    def __init__(
        self,
        sampler: PassSampler,
        total_steps: int,
        settings: TrainSettings,
        order_seed: int,
        device: torch.device,
        cursor: dict[str, Any] | None = None,
    ) -> None:
        self.sampler, self.total_steps, self.settings = sampler, total_steps, settings
        self.order_seed, self.device = order_seed, device
        self.cursor = cursor or {"step": 0, "pass_no": 0, "order": None, "position": 0}

    def __iter__(self) -> Plan:
        settings, total_steps = self.settings, self.total_steps
        by_passes = settings.budget == "epochs"
        cursor = self.cursor
        step, pass_no, order = cursor["step"], cursor["pass_no"], cursor["order"]
        first = cursor["position"]
        while (pass_no < settings.epochs) if by_passes else (step < total_steps):
            if order is None:
                gen = torch.Generator().manual_seed(derive_seed(self.order_seed, "pass", pass_no))
                if not by_passes:
                    self.sampler.plan_budget(total_steps - step, settings.batch_size)
                order = self.sampler.pass_indices(pass_no, settings.epochs, gen)
            batches = order.to(self.device).split(settings.batch_size)
            for position in range(first, len(batches)):
                if not by_passes and step >= total_steps:
                    done = min(order.numel(), position * settings.batch_size)
                    self.sampler.stop_early(order.numel(), done)
                    return
                last = position == len(batches) - 1
                if by_passes:
                    done = (pass_no + position / len(batches)) / settings.epochs
                    ends = int(last)
                else:
                    done = step / total_steps
                    ends = _boundaries_crossed(step, total_steps, settings.epochs)
                self.cursor = {
                    "step": step + 1,
                    "pass_no": pass_no + 1 if last else pass_no,
                    "order": None if last else order,
                    "position": 0 if last else position + 1,
                }
                self.sampler.count(batches[position])
                yield step, batches[position], done, ends
                step += 1
            pass_no, order, first = pass_no + 1, None, 0


def _boundaries_crossed(step: int, total_steps: int, epochs: int) -> int:
    """Log-epoch boundaries (every total/epochs steps) passed by finishing `step`."""

    def count(s: int) -> int:
        return sum(round(total_steps * e / epochs) <= s for e in range(1, epochs + 1))

    return count(step + 1) - count(step)


class PassSampler(ABC):
    """Chooses the examples of every pass: the hook of dynamic pruning methods.

    It sees each example's training loss when the example is presented, may weight the
    losses (InfoBatch rescales), and counts what was really presented, so that the
    record states the actual fraction of the data seen, not the nominal one.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.presented = 0
        self.passes = 0
        self.counts = torch.zeros(n, dtype=torch.long)
        # the share of the last pass the run did not reach (its step budget ran out inside it)
        self.unfinished = 0.0
        # steps left when the pass in progress began, and the batch size (budget iterations)
        self.steps_left: int | None = None
        self.batch_size = 0

    def count(self, idx: torch.Tensor) -> None:
        """Record that the examples `idx` were presented once more (per-example counts)."""
        if self.counts.device != idx.device:
            self.counts = self.counts.to(idx.device)
        self.counts.index_add_(0, idx, torch.ones_like(idx))

    @abstractmethod
    def choose(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        """Indices (into the training set) of this pass's examples."""

    def pass_indices(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        chosen = self.choose(pass_no, passes, gen)
        self.presented += int(chosen.numel())
        self.passes += 1
        return chosen[torch.randperm(chosen.numel(), generator=gen)]

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.ones(idx.shape, device=idx.device)

    def plan_budget(self, steps_left: int, batch_size: int) -> None:
        """Under a step budget, the steps left as the next pass begins (a sampler that aims
        at a share of the run's presentations plans with them)."""
        self.steps_left, self.batch_size = steps_left, batch_size

    def stop_early(self, chosen: int, presented: int) -> None:
        """The step budget ran out after `presented` of the last pass's `chosen` examples: that
        pass counts for the share of it that was done."""
        self.presented -= chosen - presented
        self.unfinished = 1.0 - presented / chosen

    @abstractmethod
    def observe(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        """Per-example training losses of a batch (before the update)."""

    def seen_fraction(self) -> float:
        """Mean fraction of the training set presented per pass (a pass cut short by the
        step budget weighs the share of it that was done)."""
        passes = self.passes - self.unfinished
        return self.presented / (passes * self.n) if passes > 0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        """What the sampler carries from pass to pass, for a checkpoint: all its attributes
        (a sampler holding more than tensors and plain values, which a checkpoint is read
        back as, overrides this pair)."""
        return dict(vars(self))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update(state)


class _TrainState:
    """Everything besides model and optimizer that a resumed run needs to continue exactly.

    Data-parallel, each rank sums the loss and accuracy of its own slices; the sums are
    merged over the ranks where an epoch closes and before a checkpoint (rank 0 then holds
    them, the others zero).
    """

    def __init__(self, device: torch.device, dist: Dist) -> None:
        self.dist = dist
        self.step = 0
        self.epoch = 0
        self.elapsed = 0.0
        self.logs: list[EpochLog] = []
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def accumulate(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum += loss.double() * targets.numel()
        self.correct += (logits.argmax(1) == targets).sum()
        self.seen += targets.numel()

    def merge_ranks(self, everywhere: bool = False) -> None:
        """The sums of every rank's slices on rank 0 (on every rank if `everywhere`), zero
        elsewhere; world 1: nothing to do."""
        if not self.dist.active:
            return
        seen = torch.tensor(self.seen, device=self.correct.device)
        for total in (self.loss_sum, self.correct, seen):
            self.dist.all_reduce_(total)
            if not (everywhere or self.dist.writer):
                total.zero_()
        self.seen = int(seen.item())

    def close_epoch(self, lr: float, seconds: float) -> EpochLog:
        self.merge_ranks(everywhere=True)
        self.epoch += 1
        train_loss = (self.loss_sum / max(self.seen, 1)).item()
        if not math.isfinite(train_loss):
            raise RunDiverged(
                f"training loss became {train_loss} in epoch {self.epoch} (step {self.step})"
            )
        log = EpochLog(
            epoch=self.epoch,
            step=self.step,
            lr=lr,
            train_loss=train_loss,
            train_acc=self.correct.item() / max(self.seen, 1),
            seconds=seconds,
        )
        self.logs.append(log)
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = 0
        return log

    def save(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: Mapping[str, Any],
    ) -> None:
        """Atomic: a job killed while saving leaves the previous checkpoint intact."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            **extra,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "logs": [vars(log) for log in self.logs],
            "loss_sum": self.loss_sum,
            "correct": self.correct,
            "seen": self.seen,
        }
        atomic_write(path, lambda f: torch.save(payload, f))

    def load(
        self,
        payload: Mapping[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dist: Dist,
    ) -> None:
        """Restore a saved state (`save`'s payload). Every rank loads the same file; the
        epoch's partial sums stay with rank 0."""
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        self.step, self.epoch, self.elapsed = payload["step"], payload["epoch"], payload["elapsed"]
        self.logs = [EpochLog(**log) for log in payload["logs"]]
        self.loss_sum.copy_(payload["loss_sum"])
        self.correct.copy_(payload["correct"])
        self.seen = payload["seen"]
        if not dist.writer:
            self.loss_sum.zero_()
            self.correct.zero_()
            self.seen = 0


def _resume(
    checkpointing: Checkpointing,
    state: _TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: PassSampler | None,
    dist: Dist,
) -> Mapping[str, Any]:
    """Restore the state to continue from (the caller's `start`, else the checkpoint); return
    its whole payload (a sampler's part too), or {} when training starts from the beginning.

    A checkpoint that reads but does not fit this run (another model's, a hand-made file)
    is set aside like an unreadable one, and training starts from the beginning.
    """
    payload = checkpointing.start
    if payload is None:
        payload = read_state(checkpointing.path, state.loss_sum.device)
        if payload is None:
            return {}
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            _restore(payload, state, model, optimizer, sampler, dist)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            set_aside(checkpointing.path, f"not a training state of this run: {err}")
            model.load_state_dict(initial)
            state.__init__(state.loss_sum.device, dist)
            return {}
    else:
        _restore(payload, state, model, optimizer, sampler, dist)
    checkpointing.resumed_from_step = state.step
    return payload


def _restore(
    payload: Mapping[str, Any],
    state: _TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: PassSampler | None,
    dist: Dist,
) -> None:
    state.load(payload, model, optimizer, dist)
    if sampler is not None:
        sampler.load_state_dict(payload["sampler"])


def _progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int, amp: bool = True
) -> torch.Tensor:
    """Eval-mode logits [N, K] in float32, in batches."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, x.shape[0], batch_size):
        with autocast_for(x.device, amp):
            out.append(model(x[start : start + batch_size]).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def source_logits(
    model: nn.Module,
    source: ExampleSource,
    batch_size: int,
    amp: bool = True,
    dist: Dist | None = None,
) -> torch.Tensor:
    """Eval-mode float32 logits [n, K] of every example of `source`, in its order; with an
    active `dist`, each rank computes its contiguous slice of the examples and every rank
    gets all of them."""
    if dist is None or not dist.active:
        return torch.cat(
            [predict_logits(model, x, batch_size, amp) for _, x, _ in source.eval_batches()]
            or [torch.empty(0)]
        )
    lo, hi = dist.shard_bounds(source.n)
    mine = torch.arange(lo, hi, device=source.device)
    local = [
        predict_logits(model, x, batch_size, amp)
        for _, x, _ in source.eval_batches(batch_size, mine)
    ]
    empty = torch.empty(0, source.num_classes, device=source.device)  # fewer examples than ranks
    return dist.gather_rows(torch.cat(local or [empty]), source.n)


def evaluate_split(
    model: nn.Module,
    source: ExampleSource,
    batch_size: int,
    amp: bool = True,
    dist: Dist | None = None,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model in eval mode, under the eval transform
    (the examples shared over the ranks of `dist`)."""
    logits = source_logits(model, source, batch_size, amp, dist)
    y = source.labels
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return acc, loss
