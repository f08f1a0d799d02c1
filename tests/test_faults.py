"""Fault injection: a sweep SIGKILLed at seeded random moments, rerun after each kill until it
is done, ends with exactly the records of an uninterrupted sweep."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from patience import HUNG_AFTER_S

from benchmarks.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
# 9 cells: a static method and the two dynamic ones (sampler state in the checkpoints)
GRID = ["method=random,rs2,infobatch", "seed=0,1,2"]
CELLS = 9
TINY = [
    "data.max_train=300",
    "data.max_test=100",
    "train.epochs=2",
    "train.batch_size=16",  # 38 steps a cell
    "run.checkpoint_steps=4",
]
KILLS = 5


def start_sweep(base: Path, results: Path) -> tuple[subprocess.Popen, threading.Event]:
    """The sweep in a subprocess, and an event set once Hydra starts launching cells."""
    env = {**os.environ, "PRUNEBENCH_CACHE": str(base / "cache"), "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *GRID,
        *TINY,
        f"results.dir={results}",
        f"hydra.sweep.dir={base}/multi",
    ]
    proc = subprocess.Popen(
        args, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    launched = threading.Event()

    def watch() -> None:
        for line in proc.stdout:
            if "Launching" in line:
                launched.set()

    threading.Thread(target=watch, daemon=True).start()
    return proc, launched


def records(results: Path) -> dict[str, dict]:
    """Every record by run key; each must parse (a torn write would fail here)."""
    found = {}
    for path in results.glob("*.json"):
        record = json.loads(path.read_text())
        assert record["run_key"] not in found, f"two records of one cell: {path}"
        found[record["run_key"]] = record
    return found


def reference_records(tmp_path: Path) -> tuple[dict[str, dict], float]:
    """The uninterrupted sweep, cell by cell in this process; and the seconds per cell."""
    results = tmp_path / "ref"
    cells = [
        [f"method={m}", f"seed={s}"] for m in ("random", "rs2", "infobatch") for s in (0, 1, 2)
    ]
    start = time.monotonic()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for cell in cells:
            overrides = [*cell, *TINY, f"results.dir={results}", f"cache.dir={tmp_path}/cache"]
            run(compose("config", overrides=overrides), progress=False)
    return records(results), (time.monotonic() - start) / len(cells)


def new_checkpoint(results: Path, since: int) -> bool:
    """Whether the sweep saved a checkpoint after `since` (it is mid-training)."""
    for path in (results / ".checkpoints").glob("*.pt"):
        try:
            if path.stat().st_mtime_ns > since:
                return True
        except FileNotFoundError:  # removed as its cell finished
            pass
    return False


def wait_until(proc: subprocess.Popen, condition) -> None:
    while proc.poll() is None and not condition():
        time.sleep(0.002)


@pytest.mark.slow  # seven start-ups of run.py: ~40 s on 2 quiet cores
def test_a_sweep_killed_at_random_moments_ends_equal_to_an_uninterrupted_one(tmp_path):
    reference, per_cell = reference_records(tmp_path)
    assert len(reference) == CELLS and all(r["status"] == "finished" for r in reference.values())

    rng = random.Random(11)
    results = tmp_path / "faulted"
    kills = reruns = checked = 0
    while True:
        proc, launched = start_sweep(tmp_path, results)
        assert launched.wait(HUNG_AFTER_S)
        done = len(records(results)) if results.exists() else 0
        if kills < KILLS:
            if kills % 2 == 0:  # mid-training, in a random one of the next cells
                target = done + rng.randint(0, 2)
                wait_until(proc, lambda t=target: len(records(results)) >= t)
                since = time.time_ns()
                wait_until(proc, lambda t=since: new_checkpoint(results, t))
                time.sleep(rng.uniform(0.0, 0.03))
            else:  # anywhere in what is left: cells, evaluations, record writes
                time.sleep(rng.uniform(0.0, 0.5) * per_cell * (CELLS - done))
        if proc.poll() is None and kills < KILLS:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            checked += len(records(results))
            reruns += 1
            continue
        assert proc.wait(HUNG_AFTER_S) == 0
        break
    assert kills == KILLS, f"the sweep finished after {kills} kills"

    final = records(results)
    checked += len(final)
    assert final.keys() == reference.keys()  # no cell missing, none twice
    differences = 0
    for key, ref in reference.items():
        got = final[key]
        assert got["status"] == "finished"
        differences += got["metrics"] != ref["metrics"]
        differences += (
            got["selection"]["kept_indices_sha256"] != ref["selection"]["kept_indices_sha256"]
        )
        differences += [{**e, "seconds": 0} for e in got["curve"]] != [
            {**e, "seconds": 0} for e in ref["curve"]
        ]
    resumed = sum(r["train"]["resumed_from_step"] > 0 for r in final.values())
    print(
        f"fault injection: {kills} kills, {reruns} reruns, {checked} records checked, "
        f"{resumed} cells resumed from a checkpoint, {differences} differences"
    )
    assert differences == 0
    assert not list((results / ".checkpoints").glob("*.pt"))  # finished cells drop theirs
