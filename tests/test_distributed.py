"""One cell over two ranks (gloo on CPU, launched by torchrun or submitit's local launcher)
equals the same cell on one: the same global batches, kept subset, presentation counts and,
within float tolerance, the same weights; bad layouts are refused before any work; a rank
that fails ends every rank with one line naming it, and the rerun resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_worker import train_cases
from patience import HUNG_AFTER_S

from benchmarks.augment import Augment
from benchmarks.distributed import Dist, Launch, check_global_batch, rank_device, read_launch
from benchmarks.errors import ConfigError
from benchmarks.results import run_key

ROOT = Path(__file__).resolve().parent.parent
# max |w_2 ranks - w_1 rank| measured: 1.5e-8 (mlp), 3.6e-7 (cnn, sync_bn) after 15 steps
WEIGHT_ATOL = {"cnn_sync_bn": 5e-6}
DEFAULT_ATOL = 1e-6


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return {
        **clean,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        **extra,
    }


def torchrun(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, "--nproc_per_node=2", *args],
        cwd=tmp_path,
        env=env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )


def run_py(tmp_path: Path, *overrides: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=tmp_path,
        env=env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def assert_rank_one_failed(tmp_path: Path, failed: subprocess.CompletedProcess) -> None:
    """The sweep in tmp_path/first, whose rank 1 raised: exit 3, each rank's log names rank 1
    in one line, and rank 0 wrote a failed record into tmp_path/res."""
    assert failed.returncode == 3, failed.stdout[-2000:] + failed.stderr[-2000:]
    logs = {p.name: p.read_text() for p in (tmp_path / "first" / ".submitit").rglob("*_log.err")}
    lines = [
        line for text in logs.values() for line in text.splitlines() if "prunebench: error" in line
    ]
    assert any("rank 1 of 2 raised RuntimeError: injected failure" in line for line in lines), logs
    assert any(
        line.startswith("prunebench: error: rank 0 of 2 stopped: rank 1 of 2") for line in lines
    ), logs
    (record,) = records(tmp_path / "res")
    assert record["status"] == "failed" and "rank 1 of 2 raised" in record["error"]


# ---------------------------------------------------------------- without a group


def test_a_rank_takes_a_contiguous_slice_and_the_slices_tile_the_batch():
    idx = torch.arange(100, 109)  # 9 rows over 2 ranks: 4 + 5
    slices = [Dist(launch=Launch(rank=r, world=2)).shard(idx) for r in range(2)]
    assert [s.tolist() for s in slices] == [[100, 101, 102, 103], [104, 105, 106, 107, 108]]
    assert Dist().shard(idx) is idx


def test_augmenting_a_slice_gives_the_rows_of_the_whole_batch_augmented():
    x = torch.randint(0, 256, (9, 1, 6, 6), dtype=torch.uint8)
    augment = Augment(crop_padding=2, flip=True)
    whole = augment(x, torch.Generator().manual_seed(5))
    parts = [augment(x[a:b], torch.Generator().manual_seed(5), (a, 9)) for a, b in ((0, 4), (4, 9))]
    assert torch.equal(torch.cat(parts), whole)


def test_the_global_batch_must_divide_over_the_ranks():
    check_global_batch(128, 8)
    with pytest.raises(ConfigError, match=r"train.batch_size=100 .* 8 ranks.*96 or 104"):
        check_global_batch(100, 8)


def test_the_launch_is_read_from_torchrun_or_submitit(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SUBMITIT_EXECUTOR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert read_launch() == Launch()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    for key, value in {
        "SUBMITIT_LOCAL_JOB_ID": "4242",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
    }.items():
        monkeypatch.setenv(key, value)
    launch = read_launch()
    assert (launch.rank, launch.world, launch.local_rank, launch.launcher) == (1, 2, 1, "submitit")
    assert "RANK" not in os.environ  # read, not exported: CUDA_VISIBLE_DEVICES untouched too
    for key, value in {
        "RANK": "5",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
    }.items():
        monkeypatch.setenv(key, value)
    launch = read_launch()
    assert (launch.rank, launch.world, launch.local_rank, launch.nodes) == (5, 16, 1, 2)


def test_each_rank_takes_its_own_gpu_whatever_the_launcher_made_visible(monkeypatch):
    """submitit#1704: a task bound to one GPU sees it as cuda:0; one that sees the node's
    GPUs takes its local rank's; fewer GPUs than ranks is an error, not a shared GPU."""
    launch = Launch(rank=3, world=4, local_rank=1, local_world=2, nodes=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_device("auto", launch) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", launch) == torch.device("cuda", 1)
    launch = Launch(rank=3, world=8, local_rank=3, local_world=4, nodes=2)
    with pytest.raises(ConfigError, match="4 ranks run on this node but 2 GPUs"):
        rank_device("auto", launch)
    with pytest.raises(ConfigError, match="pins every one of the 8 ranks"):
        rank_device("cuda:0", launch)
    assert rank_device("cpu", launch) == torch.device("cpu")


def test_the_run_key_does_not_change_with_sync_bn():
    cell = {
        "data": {"name": "digits"},
        "model": {"name": "cnn"},
        "method": {"name": "random"},
        "prune": {"fraction": 0.5},
        "seed": 0,
    }
    plain = run_key({**cell, "train": {"epochs": 2}})
    assert run_key({**cell, "train": {"epochs": 2, "sync_bn": True}}) == plain


def test_a_batch_that_does_not_divide_is_refused_before_any_rendezvous(tmp_path):
    # a world of 2 that never forms: the check answers before the process group is needed
    done = run_py(tmp_path, "train.batch_size=7", RANK="0", WORLD_SIZE="2", MASTER_PORT="1")
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("prunebench: error: train.batch_size=7 is the global batch")
    )


# ---------------------------------------------------------------- two ranks


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """Every case of tests/dist_worker.py trained on two ranks by torchrun."""
    tmp = tmp_path_factory.mktemp("two-ranks")
    out = tmp / "two.pt"
    done = torchrun(tmp, str(ROOT / "tests" / "dist_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one_rank() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_cases(Dist())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", ["mlp", "cnn_sync_bn", "mlp_weighted", "rs2", "infobatch"])
def test_two_ranks_train_as_one_on_the_same_global_batches(two_ranks, one_rank, case):
    """Augmentation on (crop + flip) for mlp and cnn; an odd last batch splits 5 + 4; the
    BatchNorm model trains with sync_bn; RS2 and InfoBatch see the global batch's losses
    and present every example as often as on one rank."""
    one, two = one_rank[case], two_ranks[case]
    atol = WEIGHT_ATOL.get(case, DEFAULT_ATOL)
    for name, weight in one["state"].items():
        assert torch.allclose(two["state"][name].double(), weight.double(), atol=atol, rtol=0), name
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-6)
    # the evaluation pass sharded by example and gathered: every example, in its order
    assert torch.allclose(two["logits"], one["logits"], atol=10 * atol, rtol=0)
    if one["counts"] is not None:
        assert torch.equal(two["counts"], one["counts"])
        assert one["counts"].min() < one["counts"].max()  # the samplers did prune


def test_a_signal_on_one_rank_stops_every_rank_at_its_step_and_they_resume_there(two_ranks):
    """Rank 1 alone gets USR2 in step 6: both ranks stop after it, rank 0 saves, and the
    rerun resumes both from step 7, ending with bitwise the uninterrupted weights."""
    preempted, uninterrupted = two_ranks["preempted"], two_ranks["mlp"]
    assert preempted["resumed_from_step"] == [7, 7]
    for name, weight in uninterrupted["state"].items():
        assert torch.equal(preempted["state"][name], weight), name
    assert preempted["train_loss"] == uninterrupted["train_loss"]


@pytest.mark.slow  # two grids of two cells: run.py, then torchrun with two ranks
def test_a_cell_on_two_ranks_is_the_cell_on_one(tmp_path):
    """Same run key, one record (rank 0's) stating the world size, the same kept subset
    and, for a dynamic method, the same presentation counts in the sidecar."""
    grid = ["-m", "model=mlp", "method=random,infobatch", "train.epochs=2", "data.max_train=400"]
    one = run_py(tmp_path, *grid, "results.dir=one", "hydra.sweep.dir=one-sweep")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(
        tmp_path, str(ROOT / "run.py"), *grid, "results.dir=two", "hydra.sweep.dir=two-sweep"
    )
    assert two.returncode == 0, two.stderr[-3000:]
    by_key = {r["run_key"]: r for r in records(tmp_path / "one")}
    found = records(tmp_path / "two")
    assert sorted(r["run_key"] for r in found) == sorted(by_key)
    for record in found:
        alone = by_key[record["run_key"]]
        assert record["env"]["distributed"]["world_size"] == record["train"]["world_size"] == 2
        assert alone["train"]["world_size"] == 1
        assert (
            record["selection"]["kept_indices_sha256"] == alone["selection"]["kept_indices_sha256"]
        )
        assert record["metrics"]["train_loss"] == pytest.approx(
            alone["metrics"]["train_loss"], rel=1e-5
        )
        a, b = (
            np.load(tmp_path / folder / r["selection"]["subset"]["file"])
            for folder, r in (("two", record), ("one", alone))
        )
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key


FAILING_MODEL = '''
import os

import torch
from torch import nn

from benchmarks.models import MODELS


class FailsOnRankOne(nn.Module):
    """An mlp body that raises on rank 1 in step PRUNEBENCH_TEST_FAIL_AT of training."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            at = os.environ.get("PRUNEBENCH_TEST_FAIL_AT")
            if at and torch.distributed.get_rank() == 1 and self.steps == int(at) + 1:
                raise RuntimeError("injected failure")
        return self.layers(x)


@MODELS.register("fails_on_rank_one")
def _fails(in_channels, image_size, width=32):
    return FailsOnRankOne(in_channels * image_size[0] * image_size[1], width), width
'''


@pytest.mark.slow  # submitit's local launcher with two tasks, then torchrun
def test_a_rank_that_raises_ends_the_job_naming_it_and_the_rerun_resumes(tmp_path):
    """submitit's local launcher, two tasks: rank 1 raises in step 15; both ranks stop
    (exit 3) with one line naming rank 1, rank 0 records the failure; the rerun resumes
    from the checkpoint of step 10 and finishes the cell."""
    plugin = tmp_path / "failing_model.py"
    plugin.write_text(FAILING_MODEL)
    cell = [
        f"plugins=[{plugin}]",
        "model=mlp",
        "model.name=fails_on_rank_one",
        "train.epochs=2",
        "data.max_train=400",
        "train.batch_size=32",
        "run.checkpoint_steps=10",
        "run.dist_timeout_s=60",
        "results.dir=res",
    ]
    launcher = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    failed = run_py(
        tmp_path, *launcher, *cell, "hydra.sweep.dir=first", PRUNEBENCH_TEST_FAIL_AT="15"
    )
    assert_rank_one_failed(tmp_path, failed)
    rerun = torchrun(tmp_path, str(ROOT / "run.py"), *cell)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    finished = [r for r in records(tmp_path / "res") if r["status"] == "finished"]
    assert len(finished) == 1
    assert finished[0]["train"]["resumed_from_step"] == 10
