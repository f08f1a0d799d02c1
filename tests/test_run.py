"""run.py end to end, as a user runs it: records, multirun, resume, and every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from patience import HUNG_AFTER_S

from benchmarks.data import load_dataset, stratified_split
from benchmarks.results import run_key

ROOT = Path(__file__).resolve().parent.parent


def run_cli(tmp_path, *overrides, script="run.py"):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    args = [
        sys.executable,
        str(ROOT / script),
        *overrides,
        f"hydra.run.dir={tmp_path}/out",
        f"hydra.sweep.dir={tmp_path}/multi",
    ]
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
    )


def records(tmp_path):
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]


def test_default_run_on_digits_is_well_above_chance(tmp_path):
    proc = run_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "finished"
    assert rec["cell"] == {
        **rec["cell"],
        "data": "digits",
        "model": "cnn",
        "method": "random",
        "fraction": 0.5,
    }
    assert rec["metrics"]["test_acc"] > 0.9  # chance is 0.1
    stages = {k: v for k, v in rec["timings"].items() if k != "total"}
    assert {"load", "train"} <= set(stages) and min(stages.values()) >= 0
    assert rec["timings"]["total"] == pytest.approx(sum(stages.values()))
    assert rec["selection"]["kept"] == 718 and rec["selection"]["total"] == 1437
    assert len(rec["curve"]) == rec["config"]["train"]["epochs"]
    assert (
        rec["metrics"]["test_acc"] == rec["curve"][-1]["test_acc"]
    )  # the final model, not the best
    for key in ("run_key", "config", "data", "timings", "env", "started_at", "finished_at"):
        assert rec[key]
    assert len(rec["data"]["fingerprint"]) == 64
    assert len(rec["selection"]["kept_indices_sha256"]) == 64
    assert rec["env"]["torch"] and rec["env"]["python"] and rec["env"]["device"] == "cpu"
    assert "test acc" in proc.stdout and rec["record_path"] in proc.stdout
    assert not list((tmp_path / "results").glob(".*.tmp"))  # no temp file left behind


def test_multirun_grid_writes_one_record_per_cell_and_resumes(tmp_path):
    grid = ["-m", "method=random,full", "prune.fraction=0.3,0.5", "seed=0,1", "train.epochs=1"]
    proc = run_cli(tmp_path, *grid)
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path)
    # full ignores the fraction: its two fractions are one cell per seed
    assert sorted(
        (r["cell"]["method"], r["cell"]["fraction"], r["cell"]["seed"]) for r in recs
    ) == [
        ("full", 0.0, 0),
        ("full", 0.0, 1),
        ("random", 0.3, 0),
        ("random", 0.3, 1),
        ("random", 0.5, 0),
        ("random", 0.5, 1),
    ]
    for r in recs:
        expected = (
            1437
            if r["cell"]["method"] == "full"
            else 1437 - round(r["cell"]["fraction"] * 1437 + 1e-9)
        )
        assert r["selection"]["kept"] == expected
    # rerun: everything is skipped, nothing new is written
    again = run_cli(tmp_path, *grid)
    assert again.returncode == 0 and again.stdout.count("skipped") == 8
    assert len(records(tmp_path)) == 6
    # one record deleted: only that cell runs again
    victim = next(p for p in (tmp_path / "results").glob("*random_f0.3_s1_*.json"))
    victim.unlink()
    third = run_cli(tmp_path, *grid)
    assert third.stdout.count("skipped") == 7
    assert len(records(tmp_path)) == 6


def test_same_seed_reproduces_the_run_on_cpu(tmp_path):
    run_cli(tmp_path, "train.epochs=2", "run.skip_completed=false")
    run_cli(tmp_path, "train.epochs=2", "run.skip_completed=false")
    a, b = records(tmp_path)
    assert a["metrics"] == b["metrics"]
    assert a["selection"]["kept_indices_sha256"] == b["selection"]["kept_indices_sha256"]
    assert a["run_key"] == b["run_key"]


def test_validation_split_is_carved_from_training_and_recorded(tmp_path):
    proc = run_cli(tmp_path, "data.val_size=0.2", "train.epochs=2", "prune.balance=true")
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    assert rec["data"]["n_val"] == 287 and rec["data"]["n_train"] == 1437 - 287
    assert 0 <= rec["metrics"]["val_acc"] <= 1 and "val_acc" in rec["curve"][-1]
    ds = load_dataset({"name": "digits"})
    rest, _ = stratified_split(ds.train_y, 0.2, 0)
    sizes = np.bincount(ds.train_y[rest].numpy())
    kept = np.array(rec["selection"]["kept_per_class"])
    assert kept.sum() == rec["selection"]["kept"]
    assert np.all(np.abs(kept - sizes * kept.sum() / sizes.sum()) < 1)  # proportional quotas


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=vgg"], "unknown model 'vgg'; available: cnn, mlp, resnet18, resnet50"),
        (["method.name=el3n"], "unknown method 'el3n'; available: aum, "),
        (["prune.fraction=1.2"], "prune.fraction=1.2 is outside [0, 1)"),
        (["data.name=imagenet9k"], "unknown data set 'imagenet9k'; available: cifar10"),
        (
            ["data=fashion_mnist", "data.root=/nonexistent", "data.download=false"],
            "expected /nonexistent/fashion-mnist/train-images-idx3-ubyte.gz",
        ),
        (
            ["data=fashion_mnist", "data.root=/dev/null/data"],
            "fashion_mnist: cannot write to the data root /dev/null/data",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_no_record(tmp_path, overrides, message):
    proc = run_cli(tmp_path, *overrides)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "results").rglob("*.json"))  # no record


def test_unknown_config_group_option_lists_what_exists(tmp_path):
    proc = run_cli(tmp_path, "method=foo")
    assert proc.returncode != 0
    assert "Could not find 'method/foo'" in proc.stderr and "random" in proc.stderr


def test_diverged_cell_is_recorded_and_the_multirun_goes_on(tmp_path):
    single = run_cli(tmp_path, "train.lr=1e30", "train.epochs=1")
    assert single.returncode == 1 and "diverged" in single.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "diverged" and "nan" in rec["error"]
    multi = run_cli(tmp_path, "-m", "train.lr=1e31,0.05", "train.epochs=1")
    assert multi.returncode == 1
    statuses = sorted(r["status"] for r in records(tmp_path))
    assert statuses == ["diverged", "diverged", "finished"]


def test_speed_only_switches_keep_the_run_key():
    cell = {
        "data": {"name": "digits", "root": "/here"},
        "model": {"name": "cnn"},
        "method": {"name": "random"},
        "prune": {"fraction": 0.5},
        "train": {"epochs": 5, "lr": 0.1},
        "seed": 0,
    }
    key = run_key(cell)
    faster = {**cell, "train": {"epochs": 5, "lr": 0.1, "compile": True, "cudnn_benchmark": False}}
    assert run_key(faster) == key
    assert run_key({**cell, "data": {"name": "digits", "root": "/there"}}) == key
    assert run_key({**cell, "train": {"epochs": 5, "lr": 0.2}}) != key
