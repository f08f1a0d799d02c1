"""Scores on two ranks (gloo on CPU, launched by torchrun) are the scores on one: proxy runs
spread over the ranks train as they do on one device, and GraNd's and the features' passes,
sharded by example and gathered, give every example its one-device value; a full cell on
two ranks keeps the subset it keeps on one; a rank that fails while scoring ends the job."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_scores_worker import CASES, DATA_CASES, RUNS, SHARDED, SIGNAL_AT
from omegaconf import OmegaConf
from patience import HUNG_AFTER_S
from synthetic import synthetic_ctx
from test_distributed import assert_rank_one_failed, env, records, run_py, torchrun

from benchmarks.compute import Tally
from benchmarks.errors import ConfigError
from benchmarks.pipeline import check_shared_recordings
from methods.core.base import ScoreContext, ScoreCost

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "dist_scores_worker.py")
# max |score on 2 ranks - score on 1| measured: 0 (bitwise equal) for every case and every
# stored norm, feature and logit (one thread per rank, CPU)
SCORE_ATOL = 1e-6
# proxy runs trained data-parallel (DDP sums the two slices' gradients in another order)
# measured: scores within 4.8e-7 (GraNd) and 1.9e-6 (DeepFool, on norms up to 134: 1.5e-6
# relative), recorded summaries 4.8e-7, weights 6.0e-8
DATA_ATOL, DATA_RTOL = 5e-6, 1e-5
ONE_DEVICE_SPREAD = {
    "world_size": 1,
    "runs_by_rank": [[]],
    "sharded_passes": 0,
    "data_parallel_runs": [],
}


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    """Every case of tests/dist_scores_worker.py on one rank, and on each of two ranks."""
    tmp = tmp_path_factory.mktemp("scores")
    one = subprocess.run(
        [sys.executable, WORKER, str(tmp / "one"), str(tmp / "cache-one")],
        cwd=tmp,
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(tmp, WORKER, str(tmp / "two"), str(tmp / "cache-two"))
    assert two.returncode == 0, two.stderr[-3000:]
    load = lambda name: torch.load(tmp / name, weights_only=False)  # noqa: E731
    caches = {"one": tmp / "cache-one", "two": tmp / "cache-two"}
    return {"one": load("one.0"), "two": [load("two.0"), load("two.1")], "caches": caches}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_on_two_ranks_are_the_scores_on_one(scored, case):
    """Each run's scores on both ranks equal the one-device scores, also read back from the
    cache; the runs were spread k -> rank k % 2 and every sharded pass was counted."""
    one = scored["one"][case]
    runs = CASES[case]["runs"]
    for rank, two in enumerate(scored["two"]):
        mine = two[case]
        assert mine["runs"].shape == one["runs"].shape == (runs, 57)
        assert np.allclose(mine["runs"], one["runs"], atol=SCORE_ATOL, rtol=0), rank
        assert np.allclose(mine["again"], one["runs"], atol=SCORE_ATOL, rtol=0), rank
        spread = mine["spread"]
        assert spread["world_size"] == 2
        assert spread["runs_by_rank"] == [list(range(0, runs, 2)), list(range(1, runs, 2))]
        sharded = CASES[case]["name"] in SHARDED
        assert spread["sharded_passes"] == (runs if sharded else 0)
        # read again, every artifact is found: no pass is made again
        assert mine["sharded_again"] == 0
        assert one["spread"] == ONE_DEVICE_SPREAD


@pytest.mark.parametrize("case", sorted(CASES) + sorted(DATA_CASES))
def test_the_score_cost_on_two_ranks_is_the_cost_on_one(scored, case):
    """Proxy epochs, trainings and the passes of their recordings are counted once, whichever
    rank ran them (or summed over the ranks that trained a run together); a sharded exact
    GraNd pass adds the other rank's trace of the network (one forward of one example
    through a plan per rank), nothing else."""
    options = CASES.get(case) or DATA_CASES[case]
    one = scored["one"][case]["cost"]
    for two in scored["two"]:
        mine, alone = dict(two[case]["cost"]), dict(one)
        if options["name"] == "grand":
            (network,) = alone["passes"]
            extra = mine["passes"][network]["forward"] - alone["passes"][network]["forward"]
            assert 0 < extra <= 10 * options["runs"]
            for cost in (mine, alone):
                cost["passes"] = {network: {**cost["passes"][network], "forward": 0}}
        assert mine == alone


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_proxy_runs_trained_over_two_ranks_give_the_scores_on_one(scored, case):
    """score.proxy_parallel=data: every proxy run trains over both ranks (DDP, the recorder
    seeing the gathered global batches and eval passes); both ranks end with the same
    scores, those of one device within float tolerance, read back from the cache bitwise
    without training again, and the record lists the runs trained so."""
    options = DATA_CASES[case]
    one, (first, second) = scored["one"][case], (two[case] for two in scored["two"])
    assert np.array_equal(first["runs"], second["runs"])
    for mine in (first, second):
        assert mine["runs"].shape == one["runs"].shape == (options["runs"], 57)
        assert np.allclose(mine["runs"], one["runs"], atol=DATA_ATOL, rtol=DATA_RTOL)
        assert np.array_equal(mine["again"], mine["runs"]) and mine["trained_again"] == 0
        assert mine["spread"] == {
            "world_size": 2,
            "runs_by_rank": [[], []],
            "sharded_passes": options["runs"] if options["name"] == "grand" else 0,
            "data_parallel_runs": list(range(options["runs"])),
        }
    assert one["spread"] == ONE_DEVICE_SPREAD


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_a_proxy_run_trained_over_two_ranks_records_what_one_device_records(scored, case):
    """Its summaries at every epoch (EL2N, forgetting, AUM's margins, ...), its network and
    its example-passes equal the one-device run's (BatchNorm over the global batch with
    sync_bn); the recording says it was trained by 2 ranks."""
    alone = scored["one"][case]["proxy_runs"]
    for two in scored["two"]:
        for run, mine in enumerate(two[case]["proxy_runs"]):
            assert (mine["meta"]["world_size"], alone[run]["meta"]["world_size"]) == (2, 1)
            assert mine["meta"]["passes"] == alone[run]["meta"]["passes"]
            for name, values in alone[run]["summaries"].items():
                mine_values = mine["summaries"][name].astype(float)
                assert np.allclose(mine_values, values.astype(float), atol=DATA_ATOL), (run, name)
            for name, weight in alone[run]["network"].items():
                assert torch.allclose(mine["network"][name], weight, atol=DATA_ATOL), (run, name)


def test_proxy_runs_over_two_ranks_are_the_runs_on_one(scored):
    """The K = 3 recorded proxy runs (two on rank 0, one on rank 1) hold, in the shared cache,
    the summaries and the network of the same runs trained on one device."""
    for rank, two in enumerate(scored["two"]):
        for run in range(RUNS):
            mine, alone = two["proxy_runs"][run], scored["one"]["proxy_runs"][run]
            for name, values in alone["summaries"].items():
                assert np.allclose(
                    mine["summaries"][name].astype(float), values.astype(float), atol=1e-6
                ), (rank, run, name)
            for name, weight in alone["network"].items():
                assert torch.allclose(mine["network"][name], weight, atol=1e-6), (rank, run, name)


@pytest.mark.parametrize("kind", ["grand", "features"])
def test_the_artifacts_of_sharded_passes_are_the_one_device_artifacts(scored, kind):
    """Each GraNd norm and each feature and logit (train and, where asked, validation rows)
    that the two ranks wrote to the cache, gathered from their shards, is the one-device
    value; the run's owner wrote each once, under the same key."""
    stored = {}
    for name, cache in scored["caches"].items():
        stored[name] = {}
        for path in (cache / "scores").glob(f"{kind}-*.npz"):
            with np.load(path) as f:
                stored[name][path.name] = {k: f[k] for k in f.files if k != "__meta__"}
    assert sorted(stored["two"]) == sorted(stored["one"]) and stored["one"]
    for file, arrays in stored["one"].items():
        for name, values in arrays.items():
            assert stored["two"][file][name].shape == values.shape
            assert np.allclose(stored["two"][file][name], values, atol=SCORE_ATOL, rtol=0), name


def test_a_proxy_run_trained_over_two_ranks_and_preempted_resumes_where_it_stopped(scored):
    """Rank 1 alone gets USR2 in a step of proxy run 0's training over both ranks: both
    stop after that step, rank 0 saves the training and the recording so far, and the
    requeued scoring resumes both ranks from the next step, ending with bitwise the
    uninterrupted run's recordings, networks, passes and scores."""
    for rank, two in enumerate(scored["two"]):
        preempted, uninterrupted = two["preempted"], two["forgetting_data"]
        assert preempted["stopped"]
        (line,) = preempted["resumed"]
        assert line.startswith(f"rank {rank} of 2: training resumes from step {SIGNAL_AT + 1} ")
        assert ".preempt-0-2.pt" in line
        assert np.array_equal(preempted["runs"], uninterrupted["runs"])
        for run, (mine, theirs) in enumerate(
            zip(preempted["proxy_runs"], uninterrupted["proxy_runs"], strict=True)
        ):
            assert mine["meta"]["passes"] == theirs["meta"]["passes"], run
            for name, values in theirs["summaries"].items():
                assert np.array_equal(mine["summaries"][name], values), (run, name)
            for name, weight in theirs["network"].items():
                assert torch.equal(mine["network"][name], weight), (run, name)


def test_merged_costs_are_the_cost_counted_on_one_device():
    """Per-run costs merged in run order give what one cost that counted every run states:
    a proxy run read by two runs' scores (here run 'b') counts once, own work adds up."""
    passes = lambda n: Tally({"net": [n, n]})  # noqa: E731

    def work(cost: ScoreCost, reads: list[tuple[str, int, float, int]]) -> None:
        for key, epoch, seconds, n in reads:
            cost.need(key, epoch, seconds, passes(n))
        cost.seconds += 0.5
        cost.passes = cost.passes + passes(3)
        cost.trainings_run += 1
        cost.epochs_run += 2

    first = [("a", 1, 2.0, 10), ("a", 2, 3.0, 20), ("b", 1, 1.0, 5)]
    second = [("b", 2, 4.0, 9)]
    alone, one, two = ScoreCost(), ScoreCost(), ScoreCost()
    work(alone, first)
    work(alone, second)
    work(one, first)
    work(two, second)
    merged = ScoreCost()
    merged.merge(one)
    merged.merge(two)
    assert merged.as_record() == alone.as_record()
    # by hand: run a read to epoch 2 (3 s, 20 passes), b to epoch 2 (4 s, 9), own work twice
    assert merged.as_record() == {
        "proxy_epochs": 4.0,
        "proxy_trainings": 2,
        "seconds": 3.0 + 4.0 + 2 * 0.5,
        "trainings_run": 2,
        "epochs_run": 4,
        "passes": {"net": {"forward": 20 + 9 + 2 * 3, "backward": 20 + 9 + 2 * 3}},
    }


def test_on_one_device_map_runs_is_the_loop_over_the_runs():
    ctx: ScoreContext = synthetic_ctx(n=8)
    assert ctx.map_runs(lambda k: k * k, 4) == [0, 1, 4, 9]
    assert ctx.spread.as_record() == ONE_DEVICE_SPREAD


CELL = [
    "model=mlp",
    "model.width=16",
    "method=el2n",
    "method.runs=3",
    "method.proxy.epochs=2",
    "method.epoch=1",
    "prune.fraction=0.5",
    "train.epochs=1",
    "train.batch_size=32",
    "data.max_train=300",
    "run.checkpoint_steps=0",
]


@pytest.mark.slow  # run.py, then torchrun with two ranks, twice
@pytest.mark.parametrize("parallel", ["runs", "data"])
def test_an_el2n_cell_on_two_ranks_keeps_the_subset_it_keeps_on_one(tmp_path, parallel):
    """K = 3 proxy runs spread over two ranks, or each trained over both
    (score.proxy_parallel=data): the same kept subset (the sidecar), the same recorded proxy
    runs in the score cache, the same score cost; the record says how the runs were
    spread, the same run key either way."""
    one = run_py(tmp_path, *CELL, "results.dir=one", "cache.dir=cache-one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(
        tmp_path,
        str(ROOT / "run.py"),
        *CELL,
        f"score.proxy_parallel={parallel}",
        "results.dir=two",
        "cache.dir=cache-two",
    )
    assert two.returncode == 0, two.stderr[-3000:]
    (alone,) = records(tmp_path / "one")
    (spread,) = records(tmp_path / "two")
    assert spread["run_key"] == alone["run_key"]
    selection, single = spread["selection"], alone["selection"]
    assert selection["score_spread"] == {
        "world_size": 2,
        "runs_by_rank": [[0, 2], [1]] if parallel == "runs" else [[], []],
        "sharded_passes": 0,
        "data_parallel_runs": [] if parallel == "runs" else [0, 1, 2],
    }
    assert selection["kept_indices_sha256"] == single["kept_indices_sha256"]
    a, b = (
        np.load(tmp_path / folder / r["selection"]["subset"]["file"])
        for folder, r in (("two", spread), ("one", alone))
    )
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:  # the scores of a proxy trained over both ranks: within 1e-6
        same = np.array_equal(a[key], b[key])
        assert same or (parallel == "data" and np.allclose(a[key], b[key], atol=1e-6)), key
    costs = [
        {k: v for k, v in r["selection"]["score_cost"].items() if k != "seconds"}
        for r in (spread, alone)
    ]
    assert costs[0] == costs[1] and costs[0]["trainings_run"] == 3
    recordings = [
        sorted((tmp_path / c / "scores").glob("dynamics-*.npz")) for c in ("cache-two", "cache-one")
    ]
    assert [p.name for p in recordings[0]] == [p.name for p in recordings[1]]
    assert len(recordings[0]) == 3
    for mine, theirs in zip(*recordings, strict=True):
        with np.load(mine) as x, np.load(theirs) as y:
            for key in ("el2n", "p_true", "forgetting", "margin_sum"):
                assert np.allclose(x[key], y[key], atol=1e-6, rtol=0), (mine.name, key)
            meta = json.loads(str(x["__meta__"]))
            assert meta["stop_epoch"] == 1
            assert meta["world_size"] == (2 if parallel == "data" else 1)


def test_proxies_trained_over_several_ranks_need_the_shared_score_cache():
    """score.proxy_parallel=data with cache.scores=false on several ranks is refused before
    any work, naming both keys; on one rank, or with runs spread, it is no matter."""
    cfg = OmegaConf.create({"score": {"proxy_parallel": "data"}, "cache": {"scores": False}})
    with pytest.raises(ConfigError, match=r"score.proxy_parallel=data .* cache.scores=true"):
        check_shared_recordings(cfg, 2)
    check_shared_recordings(cfg, 1)
    cfg.score.proxy_parallel = "runs"
    check_shared_recordings(cfg, 2)


FAILING_MODEL = '''
import torch
from torch import nn

from benchmarks.models import MODELS


class FailsOnRankOne(nn.Module):
    """An mlp body whose training raises on rank 1: there, while it trains proxy run 1."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())

    def forward(self, x):
        if self.training and torch.distributed.get_rank() == 1:
            raise RuntimeError("injected failure")
        return self.layers(x)


@MODELS.register("fails_on_rank_one")
def _fails(in_channels, image_size, width=32):
    return FailsOnRankOne(in_channels * image_size[0] * image_size[1], width), width
'''


@pytest.mark.slow  # submitit's local launcher with two tasks
def test_a_rank_that_fails_while_scoring_ends_the_job_naming_it(tmp_path):
    """Rank 1 raises in its proxy training (run 1) while rank 0 trains run 0: rank 0 stops
    waiting for run 1 on the store, both end with one line naming rank 1, exit 3, and
    rank 0 records the failure."""
    plugin = tmp_path / "failing_model.py"
    plugin.write_text(FAILING_MODEL)
    cell = [
        f"plugins=[{plugin}]",
        *CELL,
        "model.name=fails_on_rank_one",
        "method.runs=2",
        "run.dist_timeout_s=60",
        "results.dir=res",
    ]
    launcher = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    failed = run_py(tmp_path, *launcher, *cell, "hydra.sweep.dir=first")
    assert_rank_one_failed(tmp_path, failed)


SIGNALLED_MODEL = '''
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks.models import MODELS

SIGNAL_AT = 3  # the step of rank 0's first proxy run in which the preemption signal arrives


def _requeue_on_rank_zero(signum, frame):
    """submitit's handler: rank 0 requeues the job and exits, the other tasks return."""
    if torch.distributed.get_rank() == 0:
        sys.exit(-1)


signal.signal(signal.SIGUSR2, _requeue_on_rank_zero)


class SignalledOnRankZero(nn.Module):
    """An mlp body that raises USR2 on rank 0, once per test, in a step of its training."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())
        self.steps = 0

    def forward(self, x):
        distributed = torch.distributed.is_initialized()
        if self.training and distributed and torch.distributed.get_rank() == 0:
            self.steps += 1
            marker = Path("signalled")
            if self.steps == SIGNAL_AT + 1 and not marker.exists():
                marker.touch()
                signal.raise_signal(signal.SIGUSR2)
        return self.layers(x)


@MODELS.register("signalled_on_rank_zero")
def _signalled(in_channels, image_size, width=32):
    return SignalledOnRankZero(in_channels * image_size[0] * image_size[1], width), width
'''


@pytest.mark.slow  # run.py, then torchrun with two ranks twice
def test_a_cell_preempted_while_its_ranks_train_proxy_runs_alone_resumes_them(tmp_path):
    """score.proxy_parallel=runs: the signal arrives in step 3 of proxy run 0, which rank 0
    trains alone while rank 1 trains run 1; rank 0 saves that run's state at the step and
    exits as submitit's handler does (torchrun then stops rank 1). The rerun resumes run 0
    from its checkpoint and the cell keeps the subset the one-device cell keeps."""
    plugin = tmp_path / "signalled_model.py"
    plugin.write_text(SIGNALLED_MODEL)
    cell = [f"plugins=[{plugin}]", *CELL, "model.name=signalled_on_rank_zero"]
    one = run_py(tmp_path, *cell, "results.dir=one", "cache.dir=cache-one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = [*cell, "results.dir=two", "cache.dir=cache-two"]
    preempted = torchrun(tmp_path, str(ROOT / "run.py"), *two)
    assert preempted.returncode != 0 and (tmp_path / "signalled").exists()
    (checkpoint,) = (tmp_path / "cache-two" / "scores").glob("dynamics-*.preempt-0-1.pt")
    assert torch.load(checkpoint, weights_only=False)["step"] == 4  # saved after step 3
    assert not [r for r in records(tmp_path / "two") if r["status"] == "finished"]
    rerun = torchrun(tmp_path, str(ROOT / "run.py"), *two)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "training resumes from step 4" in rerun.stdout + rerun.stderr
    assert not checkpoint.exists()
    (alone,) = records(tmp_path / "one")
    (spread,) = [r for r in records(tmp_path / "two") if r["status"] == "finished"]
    assert spread["selection"]["kept_indices_sha256"] == alone["selection"]["kept_indices_sha256"]
    assert spread["selection"]["score_spread"]["runs_by_rank"] == [[0, 2], [1]]
