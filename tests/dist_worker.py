"""Small trainings that tests/test_distributed.py runs on one rank and, through torchrun, on two.

`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py OUT`:
every rank trains every case on its slices of the same global batches; rank 0 saves
what the cases ended with (weights, per-example presentation counts, the epoch losses)
to OUT. `train_cases(Dist())` is the same on one device.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.augment import Augment
from benchmarks.data.source import TensorSource
from benchmarks.distributed import Dist, read_launch, setup
from benchmarks.models import build_model
from benchmarks.train import (
    Checkpointing,
    LossWeights,
    PassSampler,
    TrainSettings,
    budget_steps,
    source_logits,
    train,
)
from methods.infobatch import InfoBatchSampler
from methods.rs2 import RS2Sampler

N = 57  # the last batch of a pass (9 rows) splits 5 + 4 over two ranks
BATCH = 12


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (N, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long()
    return x, y


def one_case(
    dist: Dist,
    model_name: str,
    augment: Augment,
    sampler: PassSampler | None = None,
    weights: LossWeights | None = None,
    epochs: int = 3,
    checkpointing: Checkpointing | None = None,
    signal_at: int | None = None,
) -> dict[str, Any]:
    """One training; with `signal_at`, rank 1 receives the preemption signal in that step."""
    x, y = data()
    source = TensorSource(x, y, augment, num_classes=2)
    torch.manual_seed(1)
    model = build_model(model_name, 1, 2, (8, 8), (0.5,), (0.25,), {"width": 16})
    if signal_at is not None and dist.rank == 1:
        calls = []

        def signal_in_step(module: torch.nn.Module, args: Any) -> None:
            calls.append(1)
            if module.training and len(calls) == signal_at + 1:
                signal.raise_signal(signal.SIGUSR2)

        model.register_forward_pre_hook(signal_in_step)
    settings = TrainSettings(epochs=epochs, batch_size=BATCH, lr=0.05, amp=False, budget="epochs")
    logs = train(
        model,
        source,
        settings,
        budget_steps(N, N, settings),
        order_seed=7,
        sampler=sampler,
        weights=weights,
        dist=dist,
        checkpointing=checkpointing,
    )
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        # an evaluation pass, each rank scoring its slice of the examples
        "logits": source_logits(model, source, 5, amp=False, dist=dist),
        "train_loss": [log.train_loss for log in logs],
        "counts": None if sampler is None else sampler.counts.clone(),
    }


def cases() -> dict[str, Callable[[Dist], dict[str, Any]]]:
    """Each case's training on `dist`: no batch statistics, BatchNorm with sync_bn, a weighted
    subset, and the two dynamic samplers whose per-example losses are gathered."""
    plain, augmented = Augment(), Augment(crop_padding=1, flip=True)
    weights = LossWeights(torch.linspace(0.5, 2.0, N), batch_normalise=True)
    return {
        "mlp": lambda d: one_case(d, "mlp", augmented),
        "cnn_sync_bn": lambda d: one_case(dataclasses.replace(d, sync_bn=True), "cnn", augmented),
        "mlp_weighted": lambda d: one_case(d, "mlp", plain, weights=weights),
        "rs2": lambda d: one_case(d, "mlp", plain, sampler=RS2Sampler(N, 30), epochs=4),
        "infobatch": lambda d: one_case(
            d, "mlp", plain, sampler=InfoBatchSampler(N, 0.5, 0.75), epochs=4
        ),
    }


def train_cases(dist: Dist) -> dict[str, dict[str, Any]]:
    return {name: case(dist) for name, case in cases().items()}


class Requeued(Exception):
    """Stands for submitit's handler on rank 0: it requeues the job and exits."""


def preempted_then_resumed(dist: Dist, checkpoint: Path, signal_at: int) -> dict[str, Any]:
    """The `mlp` case signalled on rank 1 in step `signal_at`, then run again from the
    checkpoint as the requeued job would; which step each rank resumed from."""

    def submitit_like(signum: int, frame: Any) -> None:
        if dist.writer:  # submitit's handler returns at once on the other ranks
            raise Requeued

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    augmented = Augment(crop_padding=1, flip=True)
    try:
        one_case(
            dist, "mlp", augmented, checkpointing=Checkpointing(checkpoint, 0), signal_at=signal_at
        )
    except (Requeued, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGUSR2, previous)
    checkpointing = Checkpointing(checkpoint, 0)
    result = one_case(dist, "mlp", augmented, checkpointing=checkpointing)
    resumed = [None] * dist.world
    torch.distributed.all_gather_object(resumed, checkpointing.resumed_from_step)
    return {**result, "resumed_from_step": resumed}


if __name__ == "__main__":
    torch.set_num_threads(1)
    launch = read_launch()
    dist = setup(launch, torch.device("cpu"), timeout_s=120, sync_bn=False)
    results = train_cases(dist)
    results["preempted"] = preempted_then_resumed(dist, Path(sys.argv[1] + ".ckpt"), signal_at=6)
    if dist.writer:
        torch.save(results, sys.argv[1])
    dist.close()
