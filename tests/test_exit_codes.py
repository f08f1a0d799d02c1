"""Exit codes and reruns as a user meets them: failed cells rerun, diverged ones are results
that keep the exit code 1, bad data or options are one line with no record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from patience import HUNG_AFTER_S

from benchmarks import cli
from benchmarks.cli import ExitCode, cell_outcome
from benchmarks.errors import ConfigError, RunDiverged

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=mlp", "train.epochs=1"]


def run_cli(tmp_path, *overrides):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        # the caller's stays behind ROOT: .ci/run's chatty run puts tests/chatty there
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    multirun = ["-m"] if "-m" in overrides else []
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        *multirun,
        *TINY,
        *(o for o in overrides if o != "-m"),
        f"hydra.run.dir={tmp_path}/out",
        f"hydra.sweep.dir={tmp_path}/multi",
    ]
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
    )


def records(tmp_path):
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]


def test_the_worst_outcome_of_the_cells_is_the_exit_code(monkeypatch):
    monkeypatch.setattr(cli, "_outcomes", [])
    assert cli.worst() == ExitCode.FINISHED == 0
    outcomes = [None, RunDiverged("nan loss"), ConfigError("bad"), RuntimeError("bug")]
    for expected, error in zip((0, 1, 2, 3), outcomes, strict=True):
        with cell_outcome():
            if error is not None:
                raise error
            cli.report(ExitCode.FINISHED)
        assert cli.worst() == expected  # 0 < diverged < bad input < crash


def test_a_failed_record_never_blocks_its_cell(tmp_path):
    assert run_cli(tmp_path).returncode == 0
    (path,) = (tmp_path / "results").glob("*.json")
    crashed = {**json.loads(path.read_text()), "status": "failed", "error": "OSError: disk full"}
    path.write_text(json.dumps(crashed))
    rerun = run_cli(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped" not in rerun.stdout and "test acc" in rerun.stdout
    assert sorted(r["status"] for r in records(tmp_path)) == ["failed", "finished"]
    again = run_cli(tmp_path)  # now the cell is done
    assert again.returncode == 0 and "skipped, finished record exists" in again.stdout


def test_a_sweep_with_a_diverged_cell_exits_1_on_the_run_and_on_the_rerun(tmp_path):
    grid = ["-m", "train.lr=1e30,0.05"]
    first = run_cli(tmp_path, *grid)
    assert first.returncode == 1, first.stderr
    assert sorted(r["status"] for r in records(tmp_path)) == ["diverged", "finished"]
    rerun = run_cli(tmp_path, *grid)
    assert rerun.returncode == 1, rerun.stderr
    assert rerun.stdout.count("skipped") == 2 and len(records(tmp_path)) == 2
    again = run_cli(tmp_path, *grid, "run.rerun_diverged=true")
    assert again.returncode == 1 and again.stdout.count("skipped") == 1
    assert sorted(r["status"] for r in records(tmp_path)) == ["diverged", "diverged", "finished"]


def test_a_corrupt_record_is_named_skipped_and_its_cell_reruns(tmp_path):
    assert run_cli(tmp_path).returncode == 0
    (path,) = (tmp_path / "results").glob("*.json")
    path.write_text(path.read_text()[:100])  # a record cut short
    rerun = run_cli(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipping {path}: not a readable record" in rerun.stdout + rerun.stderr
    assert "test acc" in rerun.stdout
    assert len(list((tmp_path / "results").glob("*.json"))) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # digits has 10 classes: 5 stratified examples hold 5 of them
        (["data.max_train=5"], "the training split (data.max_train=5) has no example of 5 of 10"),
        # a 5-example validation split holds at most 5 of the 10 classes
        (["data.val_size=5"], "the validation split (data.val_size=5) has no example of 5 of 10"),
        (["method=el2n", "method.epoch=999"], "method.epoch=999 is outside the proxy training's"),
        (
            ["method=tdds", "method.horizon=5", "method.window=3"],
            "method.horizon=5 is outside the proxy training's",
        ),
    ],
)
def test_degenerate_data_and_unfit_options_are_one_line_exit_2_and_no_record(
    tmp_path, overrides, message
):
    proc = run_cli(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("prunebench: error: ") and message in line, line
    assert "per-class counts" in line or "method." in line
    assert not list((tmp_path / "results").glob("*.json"))


def test_missing_classes_run_when_the_user_opts_in(tmp_path):
    proc = run_cli(tmp_path, "data.max_train=5", "data.allow_missing_classes=true", "method=full")
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "finished" and rec["data"]["n_train"] == 5


def test_a_submitit_sweep_exits_with_the_worst_code_of_its_job_processes(tmp_path):
    """Under submitit every cell runs in a process of its own, as on SLURM."""
    sweep = ["-m", "hydra/launcher=submitit_local", "train.lr=1e30,0.05"]
    first = run_cli(tmp_path, *sweep)
    assert first.returncode == 1, first.stderr
    assert sorted(r["status"] for r in records(tmp_path)) == ["diverged", "finished"]
    # a later sweep into the same sweep folder, without the diverged cell
    rerun = run_cli(tmp_path, "-m", "hydra/launcher=submitit_local", "train.lr=0.05,0.04")
    assert rerun.returncode == 0, rerun.stderr
