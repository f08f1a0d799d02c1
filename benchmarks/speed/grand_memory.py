"""Exact GraNd's peak memory against the number of examples it scores.

`python -m benchmarks.speed grand_memory --model resnet18 --examples 1000 10000` scores
each size in a child process of its own (so that its peak is its own) with
`per_example_grad_norms` in chunks of `--chunk-size` (GraNd's `method.chunk_size`), on
random uint8 images of CIFAR-10's shape: a pass's memory depends on the shapes, not on
the pixels. Reported per size: resident memory before scoring (model, images and one
warm-up chunk), its peak while scoring, the growth between them per example, and on
CUDA the peak GPU memory. Bounded memory is a peak that does not grow with the examples
(a leak of each chunk's graph grows it by the chunk's activations per chunk: on
`resnet18` at 32 x 32, about 5 MB per example).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Any

import torch

from benchmarks.models import build_model
from benchmarks.speed.report import write_json
from methods.core.grad_norms import per_example_grad_norms

MIB = 2**20


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(examples: int, args: argparse.Namespace, queue: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    size = (args.image_size, args.image_size)
    model = build_model(args.model, 3, 10, size, (0.5,) * 3, (0.25,) * 3).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (examples, 3, *size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (examples,), generator=gen)
    x, y = x.to(device), y.to(device)
    chunk = args.chunk_size
    per_example_grad_norms(model, x[:chunk], y[:chunk], chunk_size=chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = _peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    per_example_grad_norms(model, x, y, chunk_size=chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    queue.put(
        {
            "examples": examples,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
            "rss_before_bytes": before,
            "peak_rss_bytes": _peak_rss(),
            "peak_gpu_bytes": torch.cuda.max_memory_allocated(device)
            if device.type == "cuda"
            else None,
        }
    )


def measure(examples: int, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(examples, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"exact GraNd | device {args.device} | model {args.model} | "
        f"{args.image_size} x {args.image_size} x 3 | chunk {args.chunk_size} | "
        f"threads {args.threads}",
        "",
        "| examples | seconds | CPU seconds | RSS before (MiB) | peak RSS (MiB) "
        "| growth per example (KiB) | peak GPU (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        growth = (r["peak_rss_bytes"] - r["rss_before_bytes"]) / r["examples"] / 1024
        gpu = "" if r["peak_gpu_bytes"] is None else f"{r['peak_gpu_bytes'] / MIB:.0f}"
        lines.append(
            f"| {r['examples']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} "
            f"| {r['rss_before_bytes'] / MIB:.0f} | {r['peak_rss_bytes'] / MIB:.0f} "
            f"| {growth:.1f} | {gpu} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed grand_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="resnet18", help="a registered model")
    parser.add_argument("--examples", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="grand_memory.json")
    args = parser.parse_args(argv)
    bad = [n for n in args.examples if n < args.chunk_size]
    if bad or args.chunk_size < 1:
        parser.error(
            f"--examples {bad or args.examples} and --chunk-size {args.chunk_size}: "
            "each size must hold at least one chunk, and a chunk at least one example"
        )
    rows = [measure(n, args) for n in args.examples]
    lines = report(rows, args)
    print("\n".join(lines))
    write_json(args.out, {"args": vars(args), "results": rows, "table": lines})
