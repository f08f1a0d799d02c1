"""Sweeps on a real SLURM cluster through hydra-submitit-launcher, and records that survive kill -9.

The SLURM tests need a running cluster with accounting (tests/slurm/start.sh starts a
one-node one on localhost as root; .ci/run does it) and skip with the reason otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from patience import HUNG_AFTER_S

from benchmarks.results import RECORD_SCHEMA, iter_records, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
GRID = [
    "method=el2n,moderate",
    "prune.fraction=0.3,0.5",
    "seed=0,1",
    # one proxy training shared by all 8 cells: el2n's dynamics, moderate's features of it
    "score.runs=1",
    "score.epoch=1",
    "train.epochs=1",
]
# 360 steps; one checkpoint at step 200, after the first epoch's log (180 steps) is closed
LONG_CELL = [
    "method=random",
    "train.epochs=2",
    "train.batch_size=8",
    "run.checkpoint_steps=200",
]


def slurm_missing() -> str | None:
    """Why SLURM cannot run these tests here, or None."""
    if shutil.which("sbatch") is None:
        return "sbatch not found: no SLURM here (as root, tests/slurm/start.sh starts one)"
    ping = subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, timeout=HUNG_AFTER_S
    )
    if "UP" not in ping.stdout:
        return "the SLURM controller does not answer (scontrol ping); see tests/slurm/start.sh"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    if not {"idle", "mixed", "allocated"} & set(states.split()):
        return f"no SLURM node can take jobs (sinfo states: {' '.join(states.split())})"
    acct = subprocess.run(
        ["sacct", "-n", "-X"], capture_output=True, text=True, timeout=HUNG_AFTER_S
    )
    if acct.returncode != 0:
        return f"sacct fails (submitit needs accounting): {acct.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)


def sweep(base: Path, *overrides: str, wait: bool = True):
    """python run.py -m on SLURM with results in base/results and the sweep in base/multi."""
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(base / "results"),
        "PRUNEBENCH_CACHE": str(base / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "hydra/launcher=submitit_slurm",
        *overrides,
        f"hydra.sweep.dir={base}/multi",
    ]
    proc = subprocess.Popen(
        args, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=HUNG_AFTER_S)
    return proc.returncode, out


def read_records(results: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def wait_for(what: str, check, timeout: float = HUNG_AFTER_S, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def array_job_id(sweep_dir: Path) -> str:
    """The sweep's job array id, from the folders submitit names <array id>_<task>."""
    folders = wait_for("the job array", lambda: list((sweep_dir / ".submitit").glob("*_0")))
    return folders[0].name.split("_")[0]


def job_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def kill_9(job: str) -> None:
    """SIGKILL the task's process: scancel sends SIGTERM first, which submitit ignores, and the
    task may still finish within KillWait."""
    raw = subprocess.run(["squeue", "-h", "-j", job, "-o", "%A"], capture_output=True, text=True)
    listing = subprocess.run(
        ["scontrol", "listpids", f"{raw.stdout.strip()}.0"], capture_output=True, text=True
    )
    (pid,) = (
        int(row.split()[0]) for row in listing.stdout.splitlines()[1:] if row.split()[3] == "0"
    )
    os.kill(pid, signal.SIGKILL)


def same_training(a: dict, b: dict) -> None:
    """Same final model: metrics, subset and every epoch of the curve but its wall time.

    The kept-subset sidecar's file is named after its record (a timestamp): its sha256 counts.
    """

    def selection(record: dict) -> dict:
        sel = record["selection"]
        return {**sel, "subset": {k: v for k, v in sel["subset"].items() if k != "file"}}

    assert a["run_key"] == b["run_key"]
    assert a["metrics"] == b["metrics"]
    assert selection(a) == selection(b)
    assert [{**e, "seconds": 0} for e in a["curve"]] == [{**e, "seconds": 0} for e in b["curve"]]


@pytest.fixture(scope="module")
def grid_sweep(slurm, tmp_path_factory):
    """The 2x2x2 grid swept once on SLURM (the tests below share it)."""
    base = tmp_path_factory.mktemp("slurm-grid")
    rc, out = sweep(base, *GRID)
    assert rc == 0, out
    return base


@pytest.mark.slurm
def test_grid_is_one_job_array_with_scores_computed_once(grid_sweep):
    recs = list(read_records(grid_sweep / "results").values())
    assert len(recs) == 8 and all(r["status"] == "finished" for r in recs)
    assert sorted(
        (r["cell"]["method"], r["cell"]["fraction"], r["cell"]["seed"]) for r in recs
    ) == [(m, f, s) for m in ("el2n", "moderate") for f in (0.3, 0.5) for s in (0, 1)]
    envs = [r["env"] for r in recs]
    assert len({e["slurm_array_job_id"] for e in envs}) == 1 and envs[0]["slurm_array_job_id"]
    assert sorted(int(e["slurm_array_task_id"]) for e in envs) == list(range(8))
    assert len({e["slurm_job_id"] for e in envs}) == 8 and all(e["slurm_node"] for e in envs)
    # each artifact is computed by one task; the cells sharing it wait on its lock and load it
    artifacts = list((grid_sweep / "cache" / "scores").glob("*.npz"))
    assert sorted(p.name.split("-")[0] for p in artifacts) == ["dynamics", "features"]
    assert sum(r["selection"]["score_cost"]["trainings_run"] for r in recs) == 1
    # each task logs to the sweep dir: submitit's stdout/stderr and Hydra's job log
    array = envs[0]["slurm_array_job_id"]
    for task in range(8):
        assert (
            "record"
            in (grid_sweep / f"multi/.submitit/{array}_{task}/{array}_{task}_0_log.out").read_text()
        )
        assert (grid_sweep / f"multi/{task}/run.log").exists()


@pytest.mark.slurm
def test_rerun_of_the_grid_runs_only_the_missing_cell(grid_sweep):
    results = grid_sweep / "results"
    before = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    victim = next(p for p in before if "_el2n_f0.3_s1_" in p.name)
    key = json.loads(victim.read_text())["run_key"]
    victim.unlink()
    rc, out = sweep(grid_sweep, *GRID)
    assert rc == 0, out
    after = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    # the 7 other cells were skipped: their records are untouched and nothing else was written
    new = set(after) - set(before)
    assert {p: after[p] for p in after if p not in new} == {
        p: t for p, t in before.items() if p != victim
    }
    (rerun,) = (json.loads(p.read_text()) for p in new)
    assert rerun["run_key"] == key and rerun["status"] == "finished"
    assert rerun["selection"]["score_cost"]["trainings_run"] == 0  # scores came from the cache
    logs = "".join(p.read_text() for p in (grid_sweep / "multi/.submitit").glob("*/*_log.out"))
    assert logs.count(": skipped, ") == 7


@pytest.mark.slurm
def test_killed_and_preempted_tasks_resume_from_their_checkpoint(slurm, tmp_path):
    """One cell three times in one array: to ref/ untouched, to preempted/ signalled, to killed/
    SIGKILLed. Preemption goes through submitit's requeue; the kill through a rerun of the sweep.
    The preempted task saves its state at the end of the step the signal arrived in (not at the
    next periodic checkpoint) and its requeued run resumes from exactly that step.
    """
    dirs = {name: tmp_path / name for name in ("ref", "preempted", "killed")}
    cell = [*LONG_CELL, "results.dir=" + ",".join(str(d) for d in dirs.values())]
    proc = sweep(tmp_path, *cell, wait=False)
    array = array_job_id(tmp_path / "multi")
    preempted, killed = f"{array}_1", f"{array}_2"

    def checkpoint(name: str) -> Path | None:
        found = list((dirs[name] / ".checkpoints").glob("*.pt"))
        return found[0] if found else None

    # mid-training (right after the step-200 checkpoint): SIGKILL one task; send the other
    # submitit's preemption signal, USR2 -> checkpoint() -> scontrol requeue -> exit
    interrupt = {
        "killed": lambda: kill_9(killed),
        "preempted": lambda: subprocess.run(["scancel", "--signal=USR2", preempted], check=True),
    }
    saved = {}
    while interrupt:
        for name in [n for n in interrupt if checkpoint(n)]:
            interrupt.pop(name)()
            saved[name] = torch.load(checkpoint(name), weights_only=False)
            assert saved[name]["step"] == 200 and len(saved[name]["logs"]) == 1
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.01)
    wait_for("the kill", lambda: job_state(killed) in ("", "COMPLETING"))
    assert not list(dirs["killed"].glob("*.json")), "the task ended before it was killed"
    # SLURM holds a requeued job for 121 s (AuthInfo cred_expire + 1) so that slurmd no longer
    # refuses it as killed; that check has a 1-second resolution: 2 s are enough here
    wait_for("the requeue", lambda: job_state(preempted) == "PENDING", every=0.2)
    assert not list(dirs["preempted"].glob("*.json")), "the task ended before it was preempted"
    # saved at the signal: after step 200, before the next periodic save (400 > 360 steps)
    saved["preempted"] = torch.load(checkpoint("preempted"), weights_only=False)
    signalled_in = saved["preempted"]["step"] - 1
    assert 200 <= signalled_in < 359
    task_log = "".join(
        (tmp_path / f"multi/.submitit/{preempted}/{preempted}_0_log.{kind}").read_text()
        for kind in ("out", "err")
    )
    assert (
        f"signal SIGUSR2 arrived in step {signalled_in}: training state saved at step "
        f"{signalled_in + 1}" in task_log
    ), task_log
    subprocess.run(["scontrol", "update", f"JobId={preempted}", "StartTime=now+2"], check=True)

    out, _ = proc.communicate(timeout=HUNG_AFTER_S)
    assert proc.returncode != 0 and "FAILED" in out, out  # the killed task fails the sweep
    (ref,) = read_records(dirs["ref"]).values()
    (requeued,) = read_records(dirs["preempted"]).values()
    log = (tmp_path / f"multi/.submitit/{preempted}/{preempted}_0_log.out").read_text()
    assert f"Requeued job {preempted}" in log
    same_training(requeued, ref)
    # resumed, not retrained: the first epoch's log, wall time included, is the checkpoint's
    assert requeued["curve"][0]["seconds"] == saved["preempted"]["logs"][0]["seconds"]
    assert requeued["train"]["resumed_from_step"] == signalled_in + 1
    assert ref["train"]["resumed_from_step"] == 0

    # the rerun of the sweep resumes the killed cell and skips the two others
    rc, out = sweep(tmp_path, *cell)
    assert rc == 0, out
    (resumed,) = read_records(dirs["killed"]).values()
    same_training(resumed, ref)
    assert resumed["curve"][0]["seconds"] == saved["killed"]["logs"][0]["seconds"]
    assert resumed["train"]["resumed_from_step"] == 200
    assert not checkpoint("killed") and not checkpoint("preempted")
    assert len(read_records(dirs["ref"])) == len(read_records(dirs["preempted"])) == 1


@pytest.mark.slurm
def test_a_cell_on_two_tasks_resumes_both_ranks_from_the_signalled_step(slurm, tmp_path):
    """hydra.launcher.tasks_per_node=2: each cell is one job of two tasks, two gloo ranks,
    one record (rank 0's) stating the world size. The USR2 of a preemption reaches the
    job's tasks mid-training: both ranks stop after the same step, rank 0 saves, submitit
    requeues the job, and both ranks resume from that step, ending equal to the same cell
    run uninterrupted on two tasks."""
    dirs = {name: tmp_path / name for name in ("ref", "preempted")}
    cell = [
        *LONG_CELL,
        "model=mlp",
        "hydra.launcher.tasks_per_node=2",
        "run.dist_timeout_s=120",
        "results.dir=" + ",".join(str(d) for d in dirs.values()),
    ]
    proc = sweep(tmp_path, *cell, wait=False)
    preempted = f"{array_job_id(tmp_path / 'multi')}_1"
    checkpoints = dirs["preempted"] / ".checkpoints"
    wait_for("the step-200 checkpoint", lambda: list(checkpoints.glob("*.pt")), HUNG_AFTER_S)
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True)
    wait_for("the requeue", lambda: job_state(preempted) == "PENDING", HUNG_AFTER_S, every=0.2)
    (saved,) = checkpoints.glob("*.pt")
    signalled_in = torch.load(saved, weights_only=False)["step"] - 1
    assert 200 <= signalled_in < 359
    subprocess.run(["scontrol", "update", f"JobId={preempted}", "StartTime=now+2"], check=True)

    out, _ = proc.communicate(timeout=HUNG_AFTER_S)
    assert proc.returncode == 0, out
    (ref,) = read_records(dirs["ref"]).values()
    (requeued,) = read_records(dirs["preempted"]).values()
    assert ref["train"]["world_size"] == requeued["train"]["world_size"] == 2
    assert requeued["env"]["distributed"]["launcher"] == "submitit"
    same_training(requeued, ref)
    assert requeued["train"]["resumed_from_step"] == signalled_in + 1
    logs = {
        rank: (tmp_path / f"multi/.submitit/{preempted}/{preempted}_{rank}_log.err").read_text()
        + (tmp_path / f"multi/.submitit/{preempted}/{preempted}_{rank}_log.out").read_text()
        for rank in (0, 1)
    }
    for rank, log in logs.items():
        assert f"rank {rank} of 2: training resumes from step {signalled_in + 1}" in log, log
    assert "training state saved at step" in logs[0]
    assert not list(checkpoints.glob("*.pt"))


def test_kill_9_during_record_writes_leaves_only_whole_records(tmp_path):
    """Readers see whole records while a writer rewrites them, and after it is SIGKILLed."""
    writer = f"""
import itertools, sys
from pathlib import Path
from benchmarks.results import write_json_atomic
out = Path(sys.argv[1])
for i in itertools.count():
    record = {{"schema": {RECORD_SCHEMA}, "i": i, "pad": "x" * 2_000_000}}
    write_json_atomic(out / f"r{{i % 5}}.json", record)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)], env=env)
    try:
        wait_for("the first records", lambda: len(list(tmp_path.glob("r*.json"))) == 5)
        for _ in range(20):  # read while it writes
            for path in tmp_path.glob("*.json"):
                assert len(json.loads(path.read_text())["pad"]) == 2_000_000
        # kill while a write is in flight (its temp file exists)
        wait_for("a write in flight", lambda: list(tmp_path.glob(".*.tmp")), every=0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    records = list(iter_records(tmp_path))
    assert len(records) == 5 and all(len(r["pad"]) == 2_000_000 for r in records)
    for path in tmp_path.glob("*.json"):
        json.loads(path.read_text())
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.suffix != ".json")
    write_json_atomic(tmp_path / "r0.json", {"after": True})  # the next write is unaffected
    assert json.loads((tmp_path / "r0.json").read_text()) == {"after": True}
