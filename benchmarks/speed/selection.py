"""Selection seconds of the methods that work on proxy outputs, at a given training-set size.

`python -m benchmarks.speed selection --sizes 10000 50000 --repeats 3` times what a
method computes beyond its proxy training — everything `score`, `select_subset` and
`subset_weights` do once the proxy's outputs are in the score cache — on random proxy
outputs of a realistic shape: 10 balanced classes, penultimate features of width
`--feature-dim` (64: the `cnn` of width 32; last-layer gradients then have
10 x 65 = 650 dimensions), logits, a recorded 30-epoch training for the dynamics scores
and a validation split for GLISTER. The outputs are written into a fresh cache through
the cache's own API, so the methods run their real code path, at the selection depth of
a keep=hard top-k run keeping `--kept` of the data (the greedy orders stop where that
selection reads no further, as in a real run). DeepFool and VoG work on images, timed
on random 28 x 28 grey images with the `cnn` of width 16 (the quick_fashion proxy) at
initialisation: VoG's one input-gradient pass per checkpoint (one per proxy epoch);
DeepFool's whole attack with its defaults (at most 50 iterations, overshoot 0.02, batch
256) — its iterations per example depend on the network (a trained proxy's differ), so
the mean count is printed beside it. Repeats are interleaved (every method once per
round) and the median counts; wall and CPU seconds and the 1-minute load are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.augment import Augment
from benchmarks.cache import ScoreCache
from benchmarks.speed.report import write_json
from methods import get_method
from methods.core.base import ScoreContext
from methods.core.dynamics import RECORDED_SUMMARIES, RECORDER_VERSION, Proxy, proxy_material
from methods.core.select import PruneSpec
from methods.deepfool import DeepFool, deepfool_scores
from methods.vog import true_logit_input_gradients

# (label, method name, options, prune options): DeepCore's per-class methods with balance
CASES: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] = (
    ("loss", "loss", {"epoch": 20, "runs": 1}, {}),
    ("dual", "dual", {}, {}),
    ("dual (beta sampling)", "dual", {"sampling": "beta"}, {}),
    ("cal", "cal", {}, {}),
    ("contextual_diversity", "contextual_diversity", {}, {"balance": True}),
    ("submodular (log-det)", "submodular", {}, {"balance": True}),
    (
        "submodular (facility location)",
        "submodular",
        {"function": "facility_location"},
        {"balance": True},
    ),
    ("submodular (graph cut)", "submodular", {"function": "graph_cut"}, {"balance": True}),
    ("craig", "craig", {}, {"balance": True}),
    ("gradmatch", "gradmatch", {}, {"balance": True}),
    ("glister", "glister", {}, {"balance": True}),
    ("vog (one checkpoint)", "vog (one checkpoint)", {}, {}),
    ("deepfool", "deepfool", {}, {}),
)
IMAGE_CASES = ("vog (one checkpoint)", "deepfool")
EPOCHS = 30
# logits per example (K); `classes` (how many of them have examples) may be fewer
NUM_CLASSES = 10


def synthetic_context(
    n: int, feature_dim: int, n_val: int, cache_dir: Path, classes: int = 10, seed: int = 0
) -> ScoreContext:
    """A context whose cache already holds random proxy outputs and dynamics for n examples."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(np.arange(n) % classes)
    val_labels = torch.from_numpy(np.arange(n_val) % classes)
    ctx = ScoreContext(
        train_x=torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)),
        train_y=labels,
        num_classes=NUM_CLASSES,
        mean=(0.5,),
        std=(0.25,),
        device=torch.device("cpu"),
        seed=0,
        data_fingerprint=f"selection-speed-{n}",
        augment=Augment(),
        model_name="cnn",
        model_options={"width": 16},
        train_cfg={"epochs": EPOCHS},
        cache=ScoreCache(cache_dir),
        val_x=torch.zeros((n_val, 1, 1, 1), dtype=torch.uint8),
        val_y=val_labels,
    )
    proxy = Proxy()
    meta = {"proxy": "synthetic", "proxy_epoch": EPOCHS, "proxy_seconds": 0.0, "seconds": 0.0}

    def outputs(m: int) -> dict[str, np.ndarray]:
        features = np.abs(rng.normal(size=(m, feature_dim))).astype(np.float32)
        return {
            "features": features,
            "logits": (3 * rng.normal(size=(m, NUM_CLASSES))).astype(np.float32),
        }

    material = {**proxy_material(ctx, proxy, 0), "epoch": EPOCHS, "output": "features"}
    train_out = outputs(n)
    store = {**meta, "outputs": ["features", "logits"]}
    ctx.store.load_or_compute("features", material, lambda: (train_out, store))
    val_out = {f"val_{k}": v for k, v in outputs(n_val).items()}
    ctx.store.load_or_compute(
        "features", {**material, "val": ctx.val_hash}, lambda: ({**train_out, **val_out}, store)
    )
    p_true = rng.uniform(size=(EPOCHS + 1, n)).astype(np.float32)
    recorded = {name: p_true for name in RECORDED_SUMMARIES}
    recorded.update(
        epochs=np.arange(EPOCHS + 1),
        forgetting=np.zeros(n),
        presentations=np.zeros(n),
        ever_correct=np.zeros(n, dtype=bool),
        margin_sum=np.zeros(n),
        seconds=np.zeros(EPOCHS + 1),
    )
    dyn_meta = {
        "recorder": RECORDER_VERSION,
        "stop_epoch": EPOCHS,
        "weights_epochs": [],
        "summaries": list(RECORDED_SUMMARIES),
    }
    ctx.store.load_or_compute(
        "dynamics", proxy_material(ctx, proxy, 0), lambda: (recorded, dyn_meta)
    )
    return ctx


def time_image_case(ctx: ScoreContext, name: str) -> tuple[float, dict[str, float]]:
    """VoG's input-gradient pass of one checkpoint, or DeepFool's attack, at initialisation."""
    model = ctx.build_model(None, 0)
    if name == "deepfool":
        rows = []
        model.head.register_forward_hook(lambda _m, inputs, _o: rows.append(len(inputs[0])))
        defaults = DeepFool()
        start = time.perf_counter()
        deepfool_scores(
            model, [ctx.train_x], defaults.max_iter, defaults.overshoot, defaults.batch_size
        )
        seconds = time.perf_counter() - start
        # one forward of every example, then two (linearise, check) per active example
        return seconds, {"iterations": (sum(rows) - ctx.n) / (2 * ctx.n)}
    start = time.perf_counter()
    true_logit_input_gradients(model, ctx.train_x, ctx.train_y, 256)
    return time.perf_counter() - start, {}


def time_case(
    ctx: ScoreContext, name: str, options: dict[str, Any], spec: PruneSpec
) -> dict[str, float]:
    """Wall and CPU seconds of score + selection + subset weights, and the load before."""
    load = os.getloadavg()[0]
    cpu = time.process_time()
    if name in IMAGE_CASES:
        seconds, extra = time_image_case(ctx, name)
    else:
        ctx.prune = spec
        method = get_method(name, options)
        start = time.perf_counter()
        scores = method.score(ctx)
        kept = method.select_subset(ctx, scores, spec, seed=0)
        method.subset_weights(ctx, kept)
        seconds, extra = time.perf_counter() - start, {}
        if ctx.cost.trainings_run:
            raise RuntimeError(f"{name} trained a proxy: the timing would not be the selection's")
    return {"wall": seconds, "cpu": time.process_time() - cpu, "load": load, **extra}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed selection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--kept", type=float, default=0.5, help="fraction kept (depth read)")
    parser.add_argument(
        "--classes", type=int, default=10, help="1: time one class of n (per-class methods)"
    )
    parser.add_argument("--only", nargs="*", help="labels of the cases to time (default all)")
    parser.add_argument("--out", type=Path, default=Path("selection_speed.json"))
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    timings: dict[str, dict[int, list[dict[str, float]]]] = {
        c[0]: {n: [] for n in args.sizes} for c in cases
    }
    with tempfile.TemporaryDirectory() as tmp:
        contexts = {
            n: synthetic_context(
                n, args.feature_dim, args.val_size, Path(tmp) / str(n), args.classes
            )
            for n in args.sizes
        }
        for _ in range(args.repeats):
            for n in args.sizes:
                for label, name, options, prune in cases:
                    spec = PruneSpec(fraction=1.0 - args.kept, **prune)
                    timings[label][n].append(time_case(contexts[n], name, options, spec))
                    print(f"{label} n={n}: {json.dumps(timings[label][n][-1])}", flush=True)
                    write_json(args.out, {"threads": torch.get_num_threads(), "timings": timings})
    header = " | ".join(f"{n:,}: wall / CPU s (runs)" for n in args.sizes)
    print(f"\n| method | {header} |\n| --- |{' ---: |' * len(args.sizes)}")
    for label, per_size in timings.items():
        cells = " | ".join(
            f"{statistics.median(r['wall'] for r in t):.2f} / "
            f"{statistics.median(r['cpu'] for r in t):.2f} ({len(t)})"
            for t in per_size.values()
        )
        print(f"| {label} | {cells} |")
