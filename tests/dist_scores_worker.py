"""Scores that tests/test_distributed_scores.py computes on one rank and, through torchrun, on two.

`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_scores_worker.py
OUT CACHE`: every rank scores every case (proxy runs spread over the ranks, GraNd's and the
features' passes sharded by example) with CACHE as the shared score cache, and saves what
it holds to OUT.<rank>: each run's scores, the score cost, how the work was spread, and
each proxy run's recording and network; then the same with every proxy run trained
data-parallel over the ranks (score.proxy_parallel=data, DATA_CASES). `python
tests/dist_scores_worker.py OUT CACHE` is the same on one device (OUT.0).
"""

from __future__ import annotations

import logging
import signal
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
# the training step of proxy run 0 in which rank 1 alone is signalled (of 8: epoch 2)
SIGNAL_AT = 5
# score.proxy_parallel=data: each proxy run trained data-parallel over the ranks (a cache of
# their own, so that the runs are trained again); `sync_bn`: BatchNorm over the global batch
DATA_CASES: dict[str, dict[str, Any]] = {
    "el2n_data": {"name": "el2n", "runs": RUNS, "epoch": 1},
    "forgetting_data": {"name": "forgetting", "runs": 2},
    "grand_data": {"name": "grand", "runs": 2, "epoch": 1},
    "el2n_cnn_sync_bn": {"name": "el2n", "runs": 2, "epoch": 1, "model": "cnn", "sync_bn": True},
    # passes of their own over the networks trained so, each computed by one rank
    "deepfool_data": {"name": "deepfool", "runs": 2, "epoch": 1, "max_iter": 5},
    "vog_data": {"name": "vog", "runs": 2},
}


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
    out.update(score_data_parallel(dist, cache / "data"))
    return out


def score_data_parallel(dist: Dist, cache: Path) -> dict[str, Any]:
    """Every case of DATA_CASES scored with each proxy run trained over all ranks, then again
    from the cache; and the recording and network of each of their proxy runs."""
    out: dict[str, Any] = {}
    for case, options in DATA_CASES.items():
        options = dict(options)
        model, sync_bn = options.pop("model", "mlp"), options.pop("sync_bn", False)
        folder = cache / case
        ctx = context(folder, dist, model)
        ctx.proxy_parallel = "data"
        dist.sync_bn = sync_bn
        method = get_method(options.pop("name"), options).resolve(ctx)
        out[case] = {
            "runs": method.score_runs(ctx),
            "cost": without_seconds(ctx.cost.as_record()),
            "spread": ctx.spread.as_record(),
        }
        again = context(folder, dist, model)
        again.proxy_parallel = "data"
        out[case]["again"] = method.score_runs(again)
        out[case]["trained_again"] = again.cost.trainings_run
        dist.sync_bn = False
        out[case]["proxy_runs"] = proxy_runs(
            context(folder, Dist(), model), method.runs, at_stop=True
        )
    return out


def without_seconds(cost: dict[str, Any]) -> dict[str, Any]:
    """The cost minus its wall seconds (which no two runs share)."""
    return {k: v for k, v in cost.items() if k != "seconds"}


def proxy_runs(ctx: ScoreContext, runs: int = RUNS, at_stop: bool = False) -> list[dict[str, Any]]:
    """Each proxy run's stored recording (its per-epoch summaries and its metadata) and its
    network at epoch 1 (`at_stop`: where the recording stopped)."""
    out = []
    for run in range(runs):
        files = RecordingFiles(ctx.store.path("dynamics", proxy_material(ctx, Proxy(), run)))
        arrays, meta = read_artifact(files.summaries)
        out.append(
            {
                "summaries": {k: v for k, v in arrays.items() if k != "seconds"},
                "meta": meta,
                "network": torch.load(
                    files.weights(meta["stop_epoch"] if at_stop else 1), weights_only=True
                ),
            }
        )
    return out


class Requeued(Exception):
    """Stands for submitit's handler on rank 0: it requeues the job and exits."""


def preempted_then_resumed(dist: Dist, cache: Path) -> dict[str, Any]:
    """The `forgetting_data` case with rank 1 alone signalled (USR2) in step SIGNAL_AT of
    proxy run 0's training over both ranks, then scored again as the requeued job would:
    the scores, the recordings, and the steps the trainer said it resumed from."""

    def submitit_like(signum: int, frame: Any) -> None:
        if dist.writer:  # submitit's handler returns at once on the other ranks
            raise Requeued

    resumed: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: resumed.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("benchmarks.train").addHandler(catch)
    logging.getLogger("benchmarks.train").setLevel(logging.INFO)
    ctx = context(cache, dist)
    ctx.proxy_parallel = "data"
    options = {k: v for k, v in DATA_CASES["forgetting_data"].items() if k != "name"}
    method = get_method("forgetting", options).resolve(ctx)
    build, calls = ctx.build_model, []

    def signalled(name: str | None, seed: int) -> torch.nn.Module:
        model = build(name, seed)

        def signal_in_step(module: torch.nn.Module, args: Any) -> None:
            calls.append(module.training)
            if module.training and calls.count(True) == SIGNAL_AT + 1:
                signal.raise_signal(signal.SIGUSR2)

        if dist.rank == 1:
            model.register_forward_pre_hook(signal_in_step)
        return model

    ctx.build_model = signalled  # type: ignore[method-assign]
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        method.score_runs(ctx)
        stopped = False
    except (Requeued, SystemExit):
        stopped = True
    finally:
        signal.signal(signal.SIGUSR2, previous)
    again = context(cache, dist)
    again.proxy_parallel = "data"
    scores = method.score_runs(again)
    logging.getLogger("benchmarks.train").removeHandler(catch)
    return {
        "stopped": stopped,
        "runs": scores,
        "resumed": [line for line in resumed if "resumes from step" in line],
        "proxy_runs": proxy_runs(context(cache, Dist()), method.runs, at_stop=True),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    launch = read_launch()
    dist = setup(launch, torch.device("cpu"), timeout_s=120, sync_bn=False)
    results = score_cases(dist, Path(sys.argv[2]))
    results["preempted"] = preempted_then_resumed(dist, Path(sys.argv[2]) / "preempted")
    torch.save(results, f"{sys.argv[1]}.{dist.rank}")
    dist.close()
