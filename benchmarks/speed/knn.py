"""How close D2's approximate k-NN graph (`method.knn=ivf`) comes to the exact one.

    python -m benchmarks.speed knn                       # about 10 minutes on 2 cores
    python -m benchmarks.speed knn --sets fashion_mnist --sizes 10000 60000
    python -m benchmarks.speed knn --probes 48 96 --faiss-nprobe 8 16 32

The geometry timing runs on random Gaussian features, which have no neighbour
structure: there an approximate search can only be timed, not judged. This part judges
it on real images, with the pixels of the training images (scaled to [0, 1]) as the
features, and on the random features for contrast. For each set and size (the first N
training images in a seeded random order) it times `exact_knn` and `ivf_knn` for D2's
k = 11 (10 neighbours and the row itself) and reports the recall (the share of the exact
11 nearest that the approximate search returns) and, with the same seeded random
difficulty, the share of D2's kept set (one global graph, forward and reverse passes)
that the approximate graph keeps too, at 30, 50 and 70% removed: with D2's default
gamma = 1 and with gamma = 1 / the median edge length of the exact graph, where the
messages carry weight (at gamma = 1 on these features exp(-gamma d) is small, so the
graph moves few picks); and how much the exact graph moves the kept set at all (the
share it keeps of the hardest examples, which D2 without edges would keep).
`--faiss-nprobe` adds faiss's own inverted file (IndexIVFFlat on as many cells, trained
with the same k-means settings, each row probing its `nprobe` nearest cells) as the
library baseline that `ivf_knn`'s cell-by-cell matrix products are measured against.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.data import load_dataset
from benchmarks.speed.report import write_json
from methods.core.faiss_lib import load_faiss
from methods.core.knn import (
    IVF_ITERATIONS,
    IVF_PROBES,
    IVF_TRAIN_POINTS_PER_CELL,
    exact_knn,
    ivf_cells,
    ivf_knn,
)
from methods.core.select import kept_count
from methods.d2 import Graph, forward_pass, graph_from_search, reverse_order

K = 11  # D2's default 10 neighbours, and the row itself
FRACTIONS = (0.3, 0.5, 0.7)
DATA = {
    "fashion_mnist": {"name": "fashion_mnist"},
    "cifar10_jpg": {"name": "imagefolder", "label": "cifar10_jpg", "path": "cifar10-jpg.tar.gz"},
}
RANDOM = "random"
RANDOM_DIM = 512


def features(name: str, n: int | None, seed: int = 0) -> np.ndarray:
    """[n, D] float32 features: training pixels in [0, 1], or Gaussian for `random`."""
    if name == RANDOM:
        return np.random.default_rng(seed).standard_normal((n, RANDOM_DIM), dtype=np.float32)
    images = load_dataset(DATA[name]).train_x
    order = np.random.default_rng(seed).permutation(images.shape[0])[:n]
    return images[order].reshape(order.size, -1).numpy().astype(np.float32) / 255


def recall(exact: np.ndarray, approximate: np.ndarray) -> float:
    """Share of each row's exact neighbours (self included) that the approximate search found."""
    hits = sum(np.intersect1d(a, b).size for a, b in zip(exact, approximate, strict=True))
    return hits / exact.size


def faiss_ivf_knn(x: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's IndexIVFFlat over `ivf_knn`'s number of cells and k-means settings."""
    faiss = load_faiss()
    cells = ivf_cells(x.shape[0])
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(x.shape[1]), x.shape[1], cells)
    index.cp.niter = IVF_ITERATIONS
    index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_CELL
    index.cp.min_points_per_centroid = 1
    index.train(x)
    index.add(x)
    index.nprobe = min(nprobe, cells)
    return index.search(x, k)


def d2_kept(graph: Graph, difficulty: np.ndarray, fraction: float, gamma: float) -> np.ndarray:
    """The examples D2 (global graph, gamma for both passes) keeps at `fraction` removed."""
    picks = kept_count(difficulty.size, fraction)
    return reverse_order(forward_pass(difficulty, graph, gamma), graph, gamma, picks)


def shared(a: np.ndarray, b: np.ndarray) -> float:
    return np.intersect1d(a, b).size / a.size


def measure(x: np.ndarray, probes: list[int], nprobes: list[int]) -> list[dict[str, Any]]:
    """One row per approximate search (`ivf_knn` per probes, faiss per nprobe), against one
    exact search."""
    start = time.perf_counter()
    exact = exact_knn(x, K)
    exact_seconds = time.perf_counter() - start
    difficulty = np.random.default_rng(1).random(x.shape[0])
    hardest = np.argsort(-difficulty, kind="stable")
    exact_graph = graph_from_search(*exact)
    scaled = 1.0 / float(np.median(exact_graph.distances))
    gammas = {"default": 1.0, "scaled": scaled}
    exact_kept = {
        (name, f): d2_kept(exact_graph, difficulty, f, gamma)
        for name, gamma in gammas.items()
        for f in FRACTIONS
    }
    searches = [(f"ivf_knn, {p} probes", lambda p=p: ivf_knn(x, K, p)) for p in probes] + [
        (f"faiss IVFFlat, nprobe {p}", lambda p=p: faiss_ivf_knn(x, K, p)) for p in nprobes
    ]
    rows = []
    for label, search in searches:
        start = time.perf_counter()
        approximate = search()
        row: dict[str, Any] = {
            "n": x.shape[0],
            "dim": x.shape[1],
            "search": label,
            "exact_seconds": exact_seconds,
            "approximate_seconds": time.perf_counter() - start,
            "recall": recall(exact[1], approximate[1]),
            "scaled_gamma": scaled,
        }
        graph = graph_from_search(*approximate)
        for name, gamma in gammas.items():
            row[f"kept_shared_{name}"] = {
                f: shared(exact_kept[name, f], d2_kept(graph, difficulty, f, gamma))
                for f in FRACTIONS
            }
            row[f"graph_kept_hardest_{name}"] = {
                f: shared(exact_kept[name, f], hardest[: exact_kept[name, f].size])
                for f in FRACTIONS
            }
        rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> list[str]:
    removed = "/".join(f"{f:.0%}" for f in FRACTIONS)
    lines = [
        f"| features | N | D | approximate search | exact | approximate | recall@{K} | "
        f"D2 kept shared, gamma 1 ({removed} removed) | D2 kept shared, gamma 1/median d | "
        "exact graph's kept set among the hardest, gamma 1/median d |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = [
            " / ".join(f"{r[key][f]:.3f}" for f in FRACTIONS)
            for key in ("kept_shared_default", "kept_shared_scaled", "graph_kept_hardest_scaled")
        ]
        lines.append(
            f"| {r['set']} | {r['n']:,} | {r['dim']} | {r['search']} | "
            f"{r['exact_seconds']:.1f} s | {r['approximate_seconds']:.1f} s | {r['recall']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed knn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sets", nargs="+", choices=[*DATA, RANDOM], default=[*DATA, RANDOM])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 50_000],
        help="training images (or random rows) per set; a size above a set's is its whole set",
    )
    parser.add_argument(
        "--probes",
        type=int,
        nargs="+",
        default=[IVF_PROBES],
        help=f"mean cells of rows each cell searches (method.knn_probes; default {IVF_PROBES})",
    )
    parser.add_argument(
        "--faiss-nprobe",
        type=int,
        nargs="*",
        default=[],
        help="also faiss's IndexIVFFlat probing this many cells per row (the library baseline)",
    )
    parser.add_argument("--out", default="knn_recall.json")
    args = parser.parse_args(argv)
    if any(n < K + 1 for n in args.sizes):
        parser.error(f"--sizes must each be at least {K + 1} (got {args.sizes})")
    if any(p < 1 for p in args.probes + args.faiss_nprobe):
        parser.error(
            f"--probes and --faiss-nprobe must each be at least 1 (got {args.probes}, "
            f"{args.faiss_nprobe})"
        )
    rows = []
    for name in args.sets:
        for n in args.sizes:
            for row in measure(features(name, n), args.probes, args.faiss_nprobe):
                rows.append({"set": name, **row})
                print(report(rows[-1:])[-1], flush=True)
    lines = report(rows)
    print("\n".join(lines))
    write_json(args.out, {"args": vars(args), "rows": rows, "table": lines})
