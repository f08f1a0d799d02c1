"""Scores that tests/test_distributed_scores.py computes on one rank and, through torchrun, on two.

`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_scores_worker.py
OUT CACHE`: every rank scores every case (proxy runs spread over the ranks, GraNd's and the
features' passes sharded by example) with CACHE as the shared score cache, and saves what
it holds to OUT.<rank>: each run's scores, the score cost, how the work was spread, and
each proxy run's recording and network. `python tests/dist_scores_worker.py OUT CACHE` is
the same on one device (OUT.0).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from synthetic import synthetic_ctx

from benchmarks.cache import read_artifact
from benchmarks.distributed import Dist, read_launch, setup
from methods import get_method
from methods.core.base import ScoreContext, ScoreSpread
from methods.core.dynamics import Proxy, RecordingFiles, proxy_material

N = 57  # two ranks take 28 and 29 examples
RUNS = 3  # over two ranks: runs 0 and 2 on rank 0, run 1 on rank 1
# options of each case: the dynamics (EL2N), a sharded gradient pass (GraNd, exact), two
# methods on sharded features; `cold`: a scratch cache of each rank's own (cache.scores=false)
CASES: dict[str, dict[str, Any]] = {
    "el2n": {"name": "el2n", "runs": RUNS, "epoch": 1},
    "grand": {"name": "grand", "runs": RUNS, "epoch": 1},
    "moderate": {"name": "moderate", "runs": RUNS, "epoch": 2},
    "kcenter": {"name": "kcenter", "runs": 2, "epoch": 1},
    "grand_cold": {"name": "grand", "runs": RUNS, "epoch": 2, "cold": True},
    # BatchNorm (eval mode) and convolutions, whose kernels may differ with the batch's size
    "grand_cnn": {"name": "grand", "runs": 2, "epoch": 1, "model": "cnn"},
    "moderate_cnn": {"name": "moderate", "runs": 1, "epoch": 1, "model": "cnn"},
    # a pass of its own, spread by run and not sharded
    "deepfool": {"name": "deepfool", "runs": RUNS, "epoch": 1, "max_iter": 5},
}
# the cases whose passes over a proxy network are sharded by example
SHARDED = ("grand", "moderate", "kcenter")


def context(cache: Path | None, dist: Dist, model: str = "mlp") -> ScoreContext:
    ctx = synthetic_ctx(cache, n=N, model=model, model_options={"width": 8}, epochs=2, size=8)
    ctx.dist, ctx.spread = dist, ScoreSpread.over(dist.world)
    return ctx


def score_cases(dist: Dist, cache: Path) -> dict[str, Any]:
    """Every case scored twice on a fresh context (the second from the cache), and what
    every proxy run recorded."""
    out: dict[str, Any] = {}
    for case, options in CASES.items():
        options = dict(options)
        cold, model = options.pop("cold", False), options.pop("model", "mlp")
        ctx = context(None if cold else cache, dist, model)
        method = get_method(options.pop("name"), options).resolve(ctx)
        out[case] = {
            "runs": method.score_runs(ctx),
            "cost": without_seconds(ctx.cost.as_record()),
            "spread": ctx.spread.as_record(),
        }
        # again: from the shared cache, or from each rank's own scratch cache (where only
        # the run's owner finds it)
        again = ctx if cold else context(cache, dist, model)
        before = again.spread.sharded_passes
        out[case]["again"] = method.score_runs(again)
        out[case]["sharded_again"] = again.spread.sharded_passes - before
    out["proxy_runs"] = proxy_runs(context(cache, Dist()))
    return out


def without_seconds(cost: dict[str, Any]) -> dict[str, Any]:
    """The cost minus its wall seconds (which no two runs share)."""
    return {k: v for k, v in cost.items() if k != "seconds"}


def proxy_runs(ctx: ScoreContext) -> list[dict[str, Any]]:
    """Each proxy run's stored recording (its per-epoch summaries) and its network at epoch 1."""
    runs = []
    for run in range(RUNS):
        files = RecordingFiles(ctx.store.path("dynamics", proxy_material(ctx, Proxy(), run)))
        arrays, _ = read_artifact(files.summaries)
        runs.append(
            {
                "summaries": {k: v for k, v in arrays.items() if k != "seconds"},
                "network": torch.load(files.weights(1), weights_only=True),
            }
        )
    return runs


if __name__ == "__main__":
    torch.set_num_threads(1)
    launch = read_launch()
    dist = setup(launch, torch.device("cpu"), timeout_s=120, sync_bn=False)
    results = score_cases(dist, Path(sys.argv[2]))
    torch.save(results, f"{sys.argv[1]}.{dist.rank}")
    dist.close()
