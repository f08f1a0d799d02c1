"""The trainer: SGD on tensors that live on the device, with an explicit step budget.

Batches are index gathers from one uint8 tensor; augmentation is batched tensor
work; normalisation happens inside the model. Data order and augmentation come
from streams seeded per pass and per step, so a run is reproducible on CPU and
can resume at any step without replaying random state.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.augment import Augment
from benchmarks.errors import ConfigError, RunDiverged
from benchmarks.seeding import derive_seed

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
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
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
    progress = step / total
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
EvalFn = Callable[[nn.Module], dict[str, float]]


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; plain float32 elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prepare_model(model: nn.Module, device: torch.device, settings: TrainSettings) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda" and settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


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


def _step_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class Checkpointing:
    """Where and how often the trainer saves its full state, to resume after preemption."""

    path: Path
    every_steps: int


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    total_steps: int,
    augment: Augment,
    order_seed: int,
    evaluate: EvalFn | None = None,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = False,
    desc: str = "train",
    stop_step: int | None = None,
    checkpointing: Checkpointing | None = None,
) -> list[EpochLog]:
    """Train `model` in place for `total_steps` SGD steps on (x, y); return per-epoch logs.

    An "epoch" of the log is `total_steps / settings.epochs` steps, so curves of runs
    on differently pruned sets line up on the same axis. `on_batch(step, idx, logits, y)`
    sees each mini-batch's training-mode logits before the update (forgetting, AUM);
    `on_epoch(epoch, model)` runs after each epoch (EL2N at epoch t). `stop_step` ends
    training early while keeping the schedule of `total_steps` (a proxy scored at epoch t
    of a longer training, as Data Diet does). With `checkpointing`, the state is saved
    every `every_steps` steps and a run finding a checkpoint resumes from it, ending
    with bitwise the same model on CPU.
    """
    run_steps = total_steps if stop_step is None else min(stop_step, total_steps)
    device = x.device
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        nesterov=settings.nesterov and settings.momentum > 0,
    )
    boundaries = [round(total_steps * e / settings.epochs) for e in range(1, settings.epochs + 1)]
    state = _TrainState(device)
    if checkpointing is not None and checkpointing.path.exists():
        state.load(checkpointing.path, model, optimizer)
    clock = time.perf_counter() - state.elapsed
    bar = _progress_bar(run_steps, desc, progress, initial=state.step)
    order = batch_order(x.shape[0], run_steps, settings.batch_size, order_seed, device, state.step)
    for step, idx in order:
        lr = settings.lr * lr_factor(step, total_steps, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs = x[idx]
        if augment.active:
            inputs = augment(
                inputs, _step_generator(device, derive_seed(order_seed, "augment", step))
            )
        if device.type == "cuda" and settings.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = y[idx]
        with autocast_for(device, settings.amp):
            logits = model(inputs)
            loss = F.cross_entropy(
                logits.float(), targets, label_smoothing=settings.label_smoothing
            )
        if on_batch is not None:
            on_batch(step, idx, logits.detach().float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.accumulate(loss.detach(), logits.detach(), targets)
        state.step = step + 1
        if bar is not None:
            bar.update(1)
        while state.epoch < len(boundaries) and state.step >= boundaries[state.epoch]:
            log = state.close_epoch(lr, time.perf_counter() - clock)
            if on_epoch is not None:
                on_epoch(log.epoch, model)
            if evaluate is not None and (settings.eval_every_epoch or log.epoch == settings.epochs):
                log.eval = evaluate(model)
                model.train()
            if bar is not None:
                bar.set_postfix(
                    loss=f"{log.train_loss:.3f}",
                    **{k: f"{v:.3f}" for k, v in log.eval.items() if "acc" in k},
                )
        if (
            checkpointing is not None
            and state.step % checkpointing.every_steps == 0
            and state.step < run_steps
        ):
            state.elapsed = time.perf_counter() - clock
            state.save(checkpointing.path, model, optimizer)
    _close(bar)
    return state.logs


class _TrainState:
    """Everything besides model and optimizer that a resumed run needs to continue exactly."""

    def __init__(self, device: torch.device) -> None:
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

    def close_epoch(self, lr: float, seconds: float) -> EpochLog:
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

    def save(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Atomic: a job killed while saving leaves the previous checkpoint intact."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        payload = torch.load(path, map_location=self.loss_sum.device, weights_only=False)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        self.step, self.epoch, self.elapsed = payload["step"], payload["epoch"], payload["elapsed"]
        self.logs = [EpochLog(**log) for log in payload["logs"]]
        self.loss_sum.copy_(payload["loss_sum"])
        self.correct.copy_(payload["correct"])
        self.seen = payload["seen"]


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


def evaluate_split(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, amp: bool = True
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model in eval mode."""
    logits = predict_logits(model, x, batch_size, amp)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return acc, loss
