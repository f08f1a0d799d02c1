"""Data-parallel training steps: throughput, and the all-reduce's share of a step.

Run under a launcher, one process per device (the project never spawns its own):

    torchrun --standalone --nproc_per_node=2 -m benchmarks.speed data_parallel --model cnn
    torchrun --standalone --nproc_per_node=8 -m benchmarks.speed data_parallel \
        --model resnet50 --image-size 224 --batch-per-rank 64 --out scaling-8.json

Each rank trains the model on its own fixed batch of random images (the trainer's step:
DDP forward, cross-entropy, backward with the gradients' all-reduce, SGD step; bf16
autocast and channels_last on CUDA), timed over `--steps` after `--warmup`. The same
steps under DDP's `no_sync()` (no all-reduce) give the all-reduce's share of a step,
1 - t(no sync) / t(sync); the slowest rank's time of a block counts, and the fastest of
`--repeats` alternated blocks of each kind. Rank 0 prints one JSON row and
writes it to `--out`. A world of one is the baseline of the scaling (images/s at N ranks
against N x images/s at one): `--table ROWS.json...` prints the scaling table of such rows
(benchmarks/speed/gpu_check.sh runs 1 to all GPUs of the machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.distributed import Dist, rank_device, read_launch, setup
from benchmarks.models import build_model
from benchmarks.speed.report import machine, write_json
from benchmarks.train import TrainSettings, autocast_for, prepare_model


def timed(dist: Dist, steps: int, step: Callable[[], None]) -> float:
    """Seconds per step on the slowest rank."""
    dist.barrier()
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    seconds = torch.tensor([(time.perf_counter() - start) / steps], device=dist.device)
    if dist.active:
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    return float(seconds.item())


def measure(args: argparse.Namespace, dist: Dist) -> dict[str, Any]:
    settings = TrainSettings()
    size = (args.image_size, args.image_size)
    model = build_model(args.model, 3, args.classes, size, (0.5,) * 3, (0.25,) * 3)
    model = prepare_model(model, dist.device, settings)
    forward = dist.ddp(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(dist.rank)
    x = torch.randint(0, 256, (args.batch_per_rank, 3, *size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, args.classes, (args.batch_per_rank,), generator=gen)
    x, y = x.to(dist.device), y.to(dist.device)
    if dist.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def step(sync: bool) -> None:
        skip = forward.no_sync() if dist.active and not sync else nullcontext()
        with skip:
            with autocast_for(dist.device, settings.amp):
                loss = F.cross_entropy(forward(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step(True)
    synced, alone = [], []
    for _ in range(args.repeats):  # alternated, so that a change of load hits both alike
        synced.append(timed(dist, args.steps, lambda: step(True)))
        if dist.active:
            alone.append(timed(dist, args.steps, lambda: step(False)))
    synced, alone = min(synced), min(alone or synced)
    global_batch = args.batch_per_rank * dist.world
    return {
        "model": args.model,
        "image_size": args.image_size,
        "world_size": dist.world,
        "backend": dist.backend,
        "device": str(dist.device),
        "gpu": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else None,
        "threads_per_rank": torch.get_num_threads(),
        "batch_per_rank": args.batch_per_rank,
        "global_batch": global_batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "step_seconds": synced,
        "step_seconds_without_allreduce": alone,
        "allreduce_share": max(0.0, 1.0 - alone / synced),
        "images_per_second": global_batch / synced,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def scaling_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: throughput per world size against linear scaling of the one-rank row."""
    rows = sorted(rows, key=lambda r: r["world_size"])
    base = next((r for r in rows if r["world_size"] == 1), None)
    lines = [
        "| ranks | device | model | batch/rank | images/s | x linear | all-reduce share |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        linear = (
            ""
            if base is None
            else f"{r['images_per_second'] / (r['world_size'] * base['images_per_second']):.2f}"
        )
        lines.append(
            f"| {r['world_size']} | {r.get('gpu') or r['device']} | {r['model']} "
            f"{r['image_size']} px | {r['batch_per_rank']} | {r['images_per_second']:.1f} | "
            f"{linear} | {r['allreduce_share']:.1%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed data_parallel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="cnn", help="a registered model")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-per-rank", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed blocks of each kind; the fastest counts"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=None, help="JSON file for the row (rank 0)")
    parser.add_argument("--table", nargs="+", default=None, help="rows to tabulate, no run")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(scaling_table([json.loads(Path(p).read_text()) for p in args.table])))
        return
    launch = read_launch()
    dist = setup(launch, rank_device(args.device, launch), timeout_s=600, sync_bn=False)
    try:
        row = measure(args, dist)
    finally:
        dist.close()
    if dist.writer:
        print(json.dumps({**row, **machine()}), flush=True)
        if args.out:
            write_json(args.out, row)
