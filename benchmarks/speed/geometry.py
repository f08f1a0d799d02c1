"""Geometry part of the speed benchmark: the feature-space methods at growing N.

    python -m benchmarks.speed geometry                      # 5k..50k, about 10 minutes
    python -m benchmarks.speed geometry --sizes 2000 4000 --repeats 1   # a quick look

Times prunebench's own functions on random float32 features (D = 512, ResNet-18's
penultimate width; 10 balanced classes), each measurement in its own child process
so that its peak memory above the features is its own, repeats interleaved round by
round (medians of wall seconds, and in brackets of the CPU seconds the process used:
on a shared machine the wall time grows with the load, the CPU time much less);
`--methods d2_ivf` times D2 on the approximate graph, `d2_class` D2's per-class graphs
(`method.mode=class`, the official README's CIFAR pipeline) to each class's share of
keeping 70%. Herding and k-Center make as many
picks as keeping 70% needs (the largest kept set of a 30/50/70% grid), per class as
their defaults. The growth exponent of each method is fitted on log-log over the sizes
and used to extrapolate to CIFAR's 50,000 (10 classes) and ImageNet's 1,281,167 (1,000
classes): per-class methods as 1,000 classes of 1,281 (100 x the 10-class time at
12,812), k-means (k = the classes) as N x k, D2 over all N.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.speed.report import write_json
from methods.core.features import group_order_scores
from methods.core.select import PruneSpec, kept_count
from methods.d2 import forward_pass, knn_graph, reverse_order
from methods.herding import herding_order
from methods.kcenter import kcenter_order
from methods.moderate import class_median_distances, median_band_scores
from methods.prototypes import prototype_distances

CIFAR = (50_000, 10)
IMAGENET = (1_281_167, 1_000)
# how a method's time grows with the classes at a fixed N: "per_class" runs on groups of
# the class size; "clusters" costs N x k with k = the classes (k-means); "global" ignores them
SCALING = {
    "herding": "per_class",
    "kcenter": "per_class",
    "d2": "global",
    "d2_ivf": "global",
    "d2_class": "per_class",
    "prototypes": "clusters",
    "moderate": "per_class",
}
KEPT_GRID_LARGEST = PruneSpec(fraction=0.3)  # keeping 70%: the deepest order a 30/50/70% grid reads


def _herding(x: np.ndarray, labels: np.ndarray) -> None:
    ctx = SimpleNamespace(labels=labels, n=labels.size, prune=KEPT_GRID_LARGEST)
    group_order_scores(ctx, x, True, lambda f, _, picks: herding_order(f, picks))


def _kcenter(x: np.ndarray, labels: np.ndarray) -> None:
    ctx = SimpleNamespace(labels=labels, n=labels.size, prune=KEPT_GRID_LARGEST)
    group_order_scores(ctx, x, True, lambda f, _, picks: kcenter_order(f, 0, picks))


def _d2(x: np.ndarray, labels: np.ndarray, index: str = "exact") -> None:
    graph = knn_graph(x, 10, index)
    difficulty = np.random.default_rng(1).random(labels.size)
    reverse_order(forward_pass(difficulty, graph, 1.0), graph, 1.0)


def _d2_class(x: np.ndarray, labels: np.ndarray) -> None:
    difficulty = np.random.default_rng(1).random(labels.size)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        graph = knn_graph(x[members], 10, "exact")
        picks = kept_count(members.size, KEPT_GRID_LARGEST.fraction)
        reverse_order(forward_pass(difficulty[members], graph, 1.0), graph, 1.0, picks)


def _prototypes(x: np.ndarray, labels: np.ndarray) -> None:
    prototype_distances(x, int(labels.max()) + 1, normalize=True, seed=0)


def _moderate(x: np.ndarray, labels: np.ndarray) -> None:
    median_band_scores(class_median_distances(x.astype(np.float64), labels))


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
    "herding": _herding,
    "kcenter": _kcenter,
    "d2": _d2,
    "d2_ivf": lambda x, labels: _d2(x, labels, "ivf"),
    "d2_class": _d2_class,
    "prototypes": _prototypes,
    "moderate": _moderate,
}


def _child(name: str, n: int, classes: int, dim: int, queue: mp.Queue) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    labels = np.arange(n) % classes
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    METHODS[name](x, labels)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak = max(0, after.ru_maxrss - before.ru_maxrss) * 1024
    queue.put({"seconds": seconds, "cpu_seconds": cpu, "above_features_bytes": peak})


def measure(name: str, n: int, classes: int, dim: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, n, classes, dim, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def growth(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """(exponent b, constant a) of seconds = a N^b, least squares on log-log."""
    b, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(b), float(math.exp(log_a))


def extrapolate(
    name: str, fit: tuple[float, float], classes: int, target: tuple[int, int]
) -> float:
    """Seconds at `target` (N, classes) from a fit measured with `classes` classes."""
    b, a = fit
    n, target_classes = target
    ratio = target_classes / classes
    if SCALING[name] == "per_class":  # `ratio` times as many groups of the same class size
        return ratio * a * (n / ratio) ** b
    if SCALING[name] == "clusters":
        return ratio * a * n**b
    return a * n**b


def run(args: argparse.Namespace) -> dict[str, Any]:
    cells = [(name, n) for n in args.sizes for name in args.methods]
    rounds = [
        {cell: measure(*cell, args.classes, args.dim) for cell in cells}
        for _ in range(args.repeats)
    ]
    results: dict[str, Any] = {}
    for name in args.methods:
        rows = []
        for n in args.sizes:
            runs = [r[(name, n)] for r in rounds]
            rows.append(
                {
                    "n": n,
                    "seconds": statistics.median(r["seconds"] for r in runs),
                    "repeats": [r["seconds"] for r in runs],
                    "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                    "above_features_bytes": max(r["above_features_bytes"] for r in runs),
                }
            )
        fit = growth([r["n"] for r in rows], [r["seconds"] for r in rows])
        results[name] = {
            "rows": rows,
            "exponent": fit[0],
            "cifar_seconds": extrapolate(name, fit, args.classes, CIFAR),
            "imagenet_seconds": extrapolate(name, fit, args.classes, IMAGENET),
        }
    return results


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def report(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    header = " | ".join(f"N={n:,}" for n in args.sizes)
    lines = [
        f"| method | {header} | peak above features (largest N) | growth | "
        "CIFAR 50,000 / 10 classes | ImageNet 1,281,167 / 1,000 classes |",
        "| --- |" + " ---: |" * (len(args.sizes) + 4),
    ]
    for name, result in results.items():
        cells = " | ".join(f"{r['seconds']:.2f} s ({r['cpu_seconds']:.1f})" for r in result["rows"])
        peak = result["rows"][-1]["above_features_bytes"] / 2**20
        lines.append(
            f"| {name} | {cells} | {peak:.0f} MiB | N^{result['exponent']:.2f} | "
            f"{_duration(result['cifar_seconds'])} | {_duration(result['imagenet_seconds'])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed geometry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 10_000, 20_000, 50_000])
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=[m for m in METHODS if m != "d2_ivf"]
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="speed_geometry.json")
    args = parser.parse_args(argv)
    if len(args.sizes) < 2 or args.repeats < 1:
        parser.error("--sizes needs two or more sizes (to fit a growth) and --repeats >= 1")
    results = run(args)
    lines = report(results, args)
    print("\n".join(lines))
    write_json(args.out, {"args": vars(args), "results": results, "table": lines})
