"""Optuna sweeps optimise each cell's validation accuracy, never its test accuracy."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from patience import HUNG_AFTER_S

from benchmarks.objective import objective

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data=digits", "data.max_train=null", "model=mlp", "train.epochs=2", "score.runs=1"]


def sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRUNEBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            "experiment=tune_el2n_epoch",
            *TINY,
            f"results.dir={tmp_path / 'results'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *overrides,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )


def test_tpe_study_best_is_the_best_validation_accuracy_of_its_records(tmp_path):
    proc = sweep(
        tmp_path,
        "hydra.sweeper.n_trials=4",
        "score.epoch=range(0,2)",
        "train.lr=interval(0.01,0.3)",
    )
    assert proc.returncode == 0, proc.stderr
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert len(records) == 4 and all(r["status"] == "finished" for r in records)
    val = {r["run_key"]: r["metrics"]["val_acc"] for r in records}
    assert best["best_value"] == pytest.approx(max(val.values()))
    (winner,) = [r for r in records if r["metrics"]["val_acc"] == max(val.values())]
    assert best["best_params"]["train.lr"] == pytest.approx(winner["config"]["train"]["lr"])
    assert best["best_value"] != pytest.approx(winner["metrics"]["test_acc"])


def test_an_optimising_sweep_without_validation_split_stops_before_any_work(tmp_path):
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=2", "data.val_size=0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "prunebench: error: OptunaSweeper optimises each cell's validation accuracy, but "
        "data.val_size=0 leaves no validation split; set data.val_size (e.g. 0.1) — the test "
        "set is never used for selection"
    )
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=minimize")
    assert proc.returncode == 2 and "use hydra.sweeper.direction=maximize" in proc.stderr


def test_failed_and_diverged_cells_are_the_worst_value():
    assert objective({"status": "finished", "metrics": {"val_acc": 0.25, "test_acc": 0.9}}) == 0.25
    for record in (
        None,
        {"status": "diverged", "metrics": {"val_acc": 0.5}},
        {"status": "failed"},
        {"status": "finished", "metrics": {"val_acc": float("nan")}},
        {"status": "finished", "metrics": {"test_acc": 0.9}},
    ):
        assert objective(record) == -math.inf


def test_the_optuna_sweeper_maximises_by_default_and_resumes_its_sqlite_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PRUNEBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "hydra/sweeper=optuna",
        "data=digits",
        "data.val_size=0.2",
        "model=mlp",
        "method=random",
        "train.epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=lr",
        f"hydra.sweeper.storage={storage}",
        "train.lr=interval(0.01,0.3)",
        f"results.dir={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    for trials in (2, 4):  # the second sweep adds its trials to the stored study
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        assert "alembic" not in proc.stdout + proc.stderr
        study = optuna.load_study(study_name="lr", storage=storage)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert len(study.trials) == trials
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert study.best_value == pytest.approx(max(r["metrics"]["val_acc"] for r in records))
