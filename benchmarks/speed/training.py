"""Speed benchmark: prunebench's paths against the usual way, side by side, as ratios.

    python -m benchmarks.speed --model cnn --steps 40          # CPU, a few minutes
    python -m benchmarks.speed --model resnet18 --steps 200    # on a GPU
    python -m benchmarks.speed --model timm:vit_tiny_patch16_224 --model-kwargs '{"patch_size": 4}'
    python -m benchmarks.speed geometry                        # feature-space methods at N
    python -m benchmarks.speed knn                             # D2's approximate graph's recall
    python -m benchmarks.speed selection                       # selection seconds at N
    python -m benchmarks.speed grand_memory                    # exact GraNd peak memory at N

Each measurement runs in its own child process so that its peak memory is its own.
Compared on the same model, batch size and number of steps:
1. one training pass on CIFAR-10 JPEG: prunebench (uint8 tensors on the device, batched
   augmentation) vs torchvision (ImageFolder + PIL transforms + DataLoader with workers);
2. prunebench's steps vs the same steps fed from pre-made tensor batches (the limit);
3. EL2N scoring vs a bare eval forward pass over the same images;
4. exact GraNd vs one training step on the same batches, and vs the naive loop
   (one backward per example).
With `--compile`, prunebench's steps are also timed with `train.compile=true` (the
compile itself is reported apart); on CUDA, also with cuDNN's autotuner off, so that
each switch is kept only where it is measured to help. Seconds per epoch of the whole
training set, and of scoring it, are extrapolated from the timed steps.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.augment import Augment
from benchmarks.data import load_dataset
from benchmarks.data.source import TensorSource
from benchmarks.models import build_model
from benchmarks.speed.report import write_json
from benchmarks.train import (
    TrainSettings,
    autocast_for,
    predict_logits,
    prepare_model,
    steps_per_pass,
    train,
)
from methods.core.dynamics import eval_summaries
from methods.core.grad_norms import per_example_grad_norms

ARCHIVE = "cifar10-jpg.tar.gz"
CIFAR_TRAIN = 50_000


def _data(args: argparse.Namespace):
    return load_dataset(
        {
            "name": "imagefolder",
            "path": ARCHIVE,
            "root": args.data_root,
            "cache_dir": args.cache_dir,
        }
    )


def _model(
    args: argparse.Namespace, ds, device: torch.device, settings: TrainSettings | None = None
) -> torch.nn.Module:
    torch.manual_seed(0)
    name, options = model_spec(args.model, args.model_kwargs)
    model = build_model(
        name, ds.in_channels, ds.num_classes, ds.image_size, ds.mean, ds.std, options
    )
    return prepare_model(model, device, settings or _settings(args))


def model_spec(model: str, kwargs: str | None) -> tuple[str, dict[str, Any]]:
    """`cnn` -> ("cnn", {}); `timm:<arch>` or `torchvision:<arch>` -> that backend with
    `arch` and the JSON `--model-kwargs` as the architecture's keyword arguments."""
    backend, _, arch = model.partition(":")
    extra = json.loads(kwargs) if kwargs else {}
    if not arch:
        return backend, extra
    return backend, {"arch": arch, "kwargs": extra}


def _settings(args: argparse.Namespace, **switches: bool) -> TrainSettings:
    return TrainSettings(epochs=1, batch_size=args.batch_size, **switches)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], Any]) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _prunebench_train(args, device, **switches: bool) -> dict[str, float]:
    """Warm-up steps (which include any compilation), then the timed steps."""
    ds = _data(args)
    x, y = ds.train_x.to(device), ds.train_y.to(device)
    settings = _settings(args, **switches)
    model = _model(args, ds, device, settings)
    source = TensorSource(x, y, Augment(4, True))
    warmup = _timed(device, lambda: train(model, source, settings, args.warmup, order_seed=1))
    seconds = _timed(device, lambda: train(model, source, settings, args.steps, order_seed=2))
    return {"seconds": seconds, "warmup_seconds": warmup}


def bench_prunebench_train(args, device) -> dict[str, float]:
    return _prunebench_train(args, device)


def bench_prunebench_train_compiled(args, device) -> dict[str, float]:
    return _prunebench_train(args, device, compile=True)


def bench_prunebench_train_no_autotune(args, device) -> dict[str, float]:
    return _prunebench_train(args, device, cudnn_benchmark=False)


def bench_premade_batches(args, device) -> float:
    """The same SGD steps on batches prepared beforehand: what training costs with free data."""
    ds = _data(args)
    model = _model(args, ds, device)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(
        0, ds.train_y.numel(), (args.steps + args.warmup, args.batch_size), generator=gen
    )
    batches = [(ds.train_x[i].to(device), ds.train_y[i].to(device)) for i in idx]
    settings = _settings(args)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    if device.type == "cuda":
        batches = [(b.contiguous(memory_format=torch.channels_last), t) for b, t in batches]

    def steps(chunk):
        for inputs, targets in chunk:
            with autocast_for(device, settings.amp):
                loss = F.cross_entropy(model(inputs).float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    steps(batches[: args.warmup])
    return _timed(device, lambda: steps(batches[args.warmup :]))


def _extracted(args) -> Path:
    """The archive unpacked once to disk, as the torchvision way needs."""
    target = Path(args.cache_dir).expanduser() / "speed" / "cifar10-jpg"
    if not (target / "done").exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(Path(args.data_root).expanduser() / ARCHIVE) as tar:
            tar.extractall(target, filter="data")
        (target / "done").touch()
    return next(p.parent for p in target.rglob("train") if p.is_dir())


def bench_torchvision_train(args, device) -> float:
    from torchvision import datasets, transforms

    ds = _data(args)
    model = _model(args, ds, device)
    # the model normalises uint8-range input itself: feed it 0..255 floats like prunebench
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    folder = datasets.ImageFolder(str(_extracted(args) / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(
        folder,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
        drop_last=True,
    )
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    settings = _settings(args)

    def steps(count):
        for i, (inputs, targets) in enumerate(loader):
            if i == count:
                return
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, settings.amp):
                loss = F.cross_entropy(model(inputs).float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    steps(args.warmup)
    return _timed(device, lambda: steps(args.steps))


def bench_eval_forward(args, device) -> float:
    ds = _data(args)
    x = ds.train_x[: args.score_examples].to(device)
    model = _model(args, ds, device)
    predict_logits(model, x[: args.eval_batch], args.eval_batch)
    return _timed(device, lambda: predict_logits(model, x, args.eval_batch))


def bench_el2n(args, device) -> float:
    ds = _data(args)
    x = ds.train_x[: args.score_examples].to(device)
    y = ds.train_y[: args.score_examples].to(device)
    model = _model(args, ds, device)
    predict_logits(model, x[: args.eval_batch], args.eval_batch)
    return _timed(device, lambda: eval_summaries(predict_logits(model, x, args.eval_batch), y))


def bench_train_steps_on_score_set(args, device) -> float:
    """Training steps over the GraNd examples: the unit GraNd's cost is compared to."""
    ds = _data(args)
    x = ds.train_x[: args.grand_examples].to(device)
    y = ds.train_y[: args.grand_examples].to(device)
    model = _model(args, ds, device)
    settings = _settings(args)
    steps = -(-args.grand_examples // args.batch_size)
    source = TensorSource(x, y)
    train(model, source, settings, 2, order_seed=1)
    return _timed(device, lambda: train(model, source, settings, steps, order_seed=2))


def bench_grand(args, device) -> float:
    ds = _data(args)
    x = ds.train_x[: args.grand_examples].to(device)
    y = ds.train_y[: args.grand_examples].to(device)
    model = _model(args, ds, device).eval()
    per_example_grad_norms(
        model, x[: args.batch_size], y[: args.batch_size], chunk_size=args.batch_size
    )
    return _timed(device, lambda: per_example_grad_norms(model, x, y, chunk_size=args.batch_size))


def bench_grand_naive(args, device) -> float:
    """One backward per example; timed on `naive_examples` and scaled to the GraNd set."""
    ds = _data(args)
    x = ds.train_x[: args.naive_examples].to(device)
    y = ds.train_y[: args.naive_examples].to(device)
    model = _model(args, ds, device).eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def loop():
        for i in range(x.shape[0]):
            loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
            grads = torch.autograd.grad(loss, params)
            torch.sqrt(sum((g.double() ** 2).sum() for g in grads))

    return _timed(device, loop) * args.grand_examples / args.naive_examples


BENCHES = {
    "prunebench_train": bench_prunebench_train,
    "premade_batches_train": bench_premade_batches,
    "torchvision_train": bench_torchvision_train,
    "eval_forward": bench_eval_forward,
    "el2n_scoring": bench_el2n,
    "train_steps_grand_set": bench_train_steps_on_score_set,
    "grand_exact": bench_grand,
    "grand_naive_loop": bench_grand_naive,
}
OPTIONAL_BENCHES = {
    "prunebench_train_compiled": bench_prunebench_train_compiled,
    "prunebench_train_no_autotune": bench_prunebench_train_no_autotune,
}


def bench_names(args: argparse.Namespace) -> list[str]:
    """The core measurements, plus the switches worth measuring on this device."""
    names = list(BENCHES)
    if args.compile:
        names.append("prunebench_train_compiled")
    if args.device.startswith("cuda"):
        names.append("prunebench_train_no_autotune")
    return names


def _child(name: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timing = {**BENCHES, **OPTIONAL_BENCHES}[name](args, device)
    result = timing if isinstance(timing, dict) else {"seconds": timing}
    peak_gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({**result, "peak_rss_bytes": peak_rss, "peak_gpu_bytes": peak_gpu})


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def measure_all(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every measurement `args.repeats` times, interleaved round by round; the median counts.

    Interleaving spreads a shared machine's slow spells over all measurements instead of
    one, so the ratios stay meaningful where single timings vary by tens of percent.
    """
    rounds = [{name: measure(name, args) for name in names} for _ in range(args.repeats)]
    results = {}
    for name in names:
        runs = [r[name] for r in rounds]
        seconds = [r["seconds"] for r in runs]
        median = statistics.median(seconds)
        results[name] = {
            **min(runs, key=lambda r: abs(r["seconds"] - median)),
            "seconds": median,
            "repeats": seconds,
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            "peak_gpu_bytes": None
            if runs[0]["peak_gpu_bytes"] is None
            else max(r["peak_gpu_bytes"] for r in runs),
        }
        if "warmup_seconds" in runs[0]:  # the slowest round: the one that compiled cold
            results[name]["warmup_seconds"] = max(r["warmup_seconds"] for r in runs)
    return results


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    s = {k: v["seconds"] for k, v in results.items()}
    ratios = [
        (
            "prunebench train / torchvision DataLoader train",
            s["prunebench_train"] / s["torchvision_train"],
            "< 1",
        ),
        (
            "prunebench train / pre-made tensor batches",
            s["prunebench_train"] / s["premade_batches_train"],
            "<= 1.05",
        ),
        ("EL2N scoring / bare eval forward", s["el2n_scoring"] / s["eval_forward"], "<= 1.1"),
        (
            "exact GraNd / training steps, same examples",
            s["grand_exact"] / s["train_steps_grand_set"],
            "<= 1.5",
        ),
        ("naive per-example loop / exact GraNd", s["grand_naive_loop"] / s["grand_exact"], "> 1"),
    ]
    if "prunebench_train_compiled" in s:
        ratios.append(
            (
                "train.compile=true / eager train (after compiling)",
                s["prunebench_train_compiled"] / s["prunebench_train"],
                "< 1 to keep",
            )
        )
    if "prunebench_train_no_autotune" in s:
        ratios.append(
            (
                "cudnn_benchmark=true / false",
                s["prunebench_train"] / s["prunebench_train_no_autotune"],
                "< 1 to keep",
            )
        )
    lines = [
        f"device {args.device} | model {args.model} | batch {args.batch_size} | "
        f"train steps {args.steps} | score examples {args.score_examples} | "
        f"GraNd examples {args.grand_examples} | threads {args.threads} | "
        f"median of {args.repeats}",
        "",
        "| measurement | seconds (median) | range | peak RSS (MiB) | peak GPU (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        gpu = "" if r["peak_gpu_bytes"] is None else f"{r['peak_gpu_bytes'] / 2**20:.0f}"
        spread = r.get("repeats", [r["seconds"]])
        lines.append(
            f"| {name} | {r['seconds']:.3f} | {min(spread):.3f}–{max(spread):.3f} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} | {gpu} |"
        )
    lines += ["", "| ratio | value | goal |", "| --- | ---: | --- |"]
    lines += [f"| {label} | {value:.2f}x | {goal} |" for label, value, goal in ratios]
    if "prunebench_train_compiled" in results:
        lines += [
            "",
            f"Warm-up of {args.warmup} steps, compiling included (slowest round): "
            f"{results['prunebench_train_compiled']['warmup_seconds']:.1f} s compiled, "
            f"{results['prunebench_train']['warmup_seconds']:.1f} s eager.",
        ]
    lines += ["", *per_epoch(s, args)]
    return lines


def per_epoch(seconds: dict[str, float], args: argparse.Namespace) -> list[str]:
    """Seconds for the whole CIFAR-10 training set, extrapolated from the timed part."""
    steps = steps_per_pass(CIFAR_TRAIN, args.batch_size)
    epoch = seconds["prunebench_train"] / args.steps * steps
    rows = [
        (f"one training epoch ({steps} steps of {args.batch_size})", epoch),
        ("Data Diet protocol, 200 epochs", 200 * epoch),
        (
            f"EL2N scoring of {CIFAR_TRAIN:,} examples",
            seconds["el2n_scoring"] / args.score_examples * CIFAR_TRAIN,
        ),
        (
            f"exact GraNd of {CIFAR_TRAIN:,} examples",
            seconds["grand_exact"] / args.grand_examples * CIFAR_TRAIN,
        ),
    ]
    lines = [
        f"Extrapolated to the {CIFAR_TRAIN:,} CIFAR-10 training images:",
        "",
        "| prunebench | seconds |",
        "| --- | ---: |",
    ]
    return lines + [f"| {label} | {value:.1f} |" for label, value in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="cnn", help="a registered model, or timm:<arch>")
    parser.add_argument(
        "--model-kwargs", default=None, help="JSON: the model's options or timm/torchvision kwargs"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--data-root", default=os.environ.get("PRUNEBENCH_DATA", "~/.cache/prunebench/data")
    )
    parser.add_argument(
        "--cache-dir", default=os.environ.get("PRUNEBENCH_CACHE", "~/.cache/prunebench")
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--score-examples", type=int, default=10_000)
    parser.add_argument("--eval-batch", type=int, default=1024)
    parser.add_argument("--grand-examples", type=int, default=1024)
    parser.add_argument("--naive-examples", type=int, default=64)
    parser.add_argument(
        "--compile", action="store_true", help="also time train.compile=true (torch.compile)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; the median is reported"
    )
    parser.add_argument("--out", default="speed.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be >= 1")
    _data(args)  # decode and cache once, before the children time anything
    results = measure_all(bench_names(args), args)
    lines = report(results, args)
    print("\n".join(lines))
    payload = {
        "args": vars(args),
        "results": results,
        "table": lines,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    write_json(args.out, payload)
