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

import numpy as np
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


# --- a stored proxy recording extended under preemption and kill -9 ----------------------------

# a tiny MLP recording: 300 digits, 10 steps an epoch, stored at epoch 1 by EL2N, then
# extended to epoch 6 by forgetting (proxy steps 10..59)
PROXY = [
    "model=mlp",
    "data.max_train=300",
    "data.max_test=100",
    "train.epochs=6",
    "train.batch_size=30",
    "run.checkpoint_steps=0",
]
STORED = ["method=el2n", "method.epoch=1", "method.runs=1"]
EXTEND = ["method=forgetting"]
FIRST, LAST = 10, 59  # the extension's proxy steps
MOMENTS = 6


def launch(cache: Path, results: Path, method: list[str], fault: str = "") -> int:
    """One job of the cell under `tests/faulty_run.py` (its exit code; -9 when killed)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRUNEBENCH_CACHE": str(cache),
        "PRUNEBENCH_FAULT": fault,
        "OMP_NUM_THREADS": "1",
    }
    args = [
        sys.executable,
        str(ROOT / "tests" / "faulty_run.py"),
        *PROXY,
        *method,
        f"results.dir={results}",
        f"hydra.run.dir={results}/out",
    ]
    proc = subprocess.run(args, cwd=results.parent, env=env, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode


def faults_of_a_moment(rng: random.Random, moment: int) -> list[str]:
    """The faults the successive jobs of one moment meet (the last job runs unharmed)."""
    first = rng.randint(FIRST, LAST - 5)
    later = rng.randint(first + 1, LAST)
    return [
        [f"usr2:{first}"],  # preempted once
        [f"kill:{first}"],  # killed once
        [f"usr2:{first}", f"kill:{later}"],  # the resumed job killed later
        [f"usr2:{first}", f"usr2:{later}"],  # preempted twice
        ["kill:summaries"],  # killed between the stop state and the summaries
        [f"usr2:{LAST}"],  # preempted in the last step
    ][moment % 6]


def cache_arrays(cache: Path) -> dict[str, dict]:
    """Every score artifact's arrays (timings left out), by file name."""
    from benchmarks.cache import read_artifact

    found = {}
    for path in sorted((cache / "scores").glob("*.npz")):
        arrays, _ = read_artifact(path)
        found[path.name] = {k: v for k, v in arrays.items() if k != "seconds"}
    return found


@pytest.mark.slow  # ~20 start-ups of run.py on a tiny MLP
def test_a_continued_proxy_recording_preempted_or_killed_anywhere_equals_a_clean_one(tmp_path):
    import shutil

    stored = tmp_path / "stored"
    assert launch(stored, tmp_path / "stored-results", STORED) == 0
    clean = tmp_path / "clean"
    shutil.copytree(stored, clean)
    assert launch(clean, tmp_path / "clean-results", EXTEND) == 0
    (reference,) = records(tmp_path / "clean-results").values()
    reference_scores = cache_arrays(clean)
    assert any(name.startswith("dynamics-") for name in reference_scores)

    rng = random.Random(26)
    moments = reruns = differences = 0
    for moment in range(MOMENTS):
        cache, results = tmp_path / f"m{moment}", tmp_path / f"m{moment}-results"
        shutil.copytree(stored, cache)
        for fault in faults_of_a_moment(rng, moment):
            code = launch(cache, results, EXTEND, fault)
            assert code in (-signal.SIGKILL, 75), (fault, code)
            reruns += 1
        assert launch(cache, results, EXTEND) == 0
        moments += 1
        (got,) = records(results).values()
        differences += got["metrics"] != reference["metrics"]
        differences += (
            got["selection"]["kept_indices_sha256"] != reference["selection"]["kept_indices_sha256"]
        )
        scores = cache_arrays(cache)
        differences += scores.keys() != reference_scores.keys()
        for name, arrays in reference_scores.items():
            differences += any(
                not np.array_equal(arrays[k], scores[name][k], equal_nan=True) for k in arrays
            )
        leftovers = [p.name for p in (cache / "scores").glob("*.preempt-*.pt")]
        assert not leftovers, leftovers  # a finished extension drops its preemption checkpoint
    print(
        f"continued proxy recordings: {moments} moments, {reruns} faulted jobs rerun, "
        f"{differences} differences"
    )
    assert differences == 0


# --- damaged and planted files ------------------------------------------------------------------


class Planted:
    """What a file planted in a shared folder would hold: unpickling it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def damage(path: Path, how: str, marker: Path) -> None:
    """Replace `path` by a truncated copy, random bytes, nothing, or a planted pickle."""
    import torch

    if how == "truncated":
        data = path.read_bytes() if path.exists() else _a_state_file(path)
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(random.Random(0).randbytes(2000))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"model": Planted(marker), "step": 1}, path)


def _a_state_file(path: Path) -> bytes:
    import torch

    torch.save({"model": {"w": torch.ones(1000)}, "step": 4}, path)
    return path.read_bytes()


def in_process(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *PROXY,
                *overrides,
                f"results.dir={tmp_path}/results",
                f"cache.dir={tmp_path}/cache",
            ],
        )
        return run(cfg, progress=False)


def set_aside_warnings(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "planted"])
def test_a_damaged_or_planted_checkpoint_is_set_aside_and_its_cell_trains(tmp_path, caplog, how):
    first = in_process(tmp_path, "method=random", "run.checkpoint_steps=7")
    checkpoint = tmp_path / "results" / ".checkpoints" / f"{first['run_key']}.pt"
    marker = tmp_path / "marker"
    damage(checkpoint, how, marker)
    again = in_process(
        tmp_path, "method=random", "run.checkpoint_steps=7", "run.skip_completed=false"
    )
    assert again["status"] == "finished" and again["train"]["resumed_from_step"] == 0
    assert again["metrics"] == first["metrics"]  # trained from the start, as the first time
    assert not marker.exists()  # the planted file ran nothing
    (line,) = set_aside_warnings(caplog, checkpoint)
    assert "cannot be read" in line and f"moved aside to {checkpoint.name}.corrupt" in line
    assert checkpoint.with_name(checkpoint.name + ".corrupt").exists()
    if how == "planted":
        assert "refused unread" in line


@pytest.fixture(scope="module")
def stored_recording(tmp_path_factory):
    """A cache holding EL2N's recording stopped at epoch 1, and the record and scores of
    forgetting extending a clean copy of it."""
    import shutil

    stored = tmp_path_factory.mktemp("stored")
    in_process(stored, *STORED)
    clean = tmp_path_factory.mktemp("clean")
    shutil.copytree(stored / "cache", clean / "cache")
    return stored / "cache", in_process(clean, *EXTEND), cache_arrays(clean / "cache")


@pytest.mark.parametrize(
    "victim, how",
    [("state-1", "truncated"), ("state-1", "planted"), ("weights-1", "truncated"),
     ("preempt-1-6", "planted"), ("preempt-1-6", "garbage")],
)  # fmt: skip
def test_a_damaged_or_planted_proxy_file_is_set_aside_and_the_scores_equal_a_clean_cache(
    tmp_path, caplog, stored_recording, victim, how
):
    import shutil

    stored, reference, reference_scores = stored_recording
    shutil.copytree(stored, tmp_path / "cache")
    (summaries,) = (tmp_path / "cache" / "scores").glob("dynamics-*.npz")
    path = summaries.with_name(f"{summaries.stem}.{victim}.pt")
    marker = tmp_path / "marker"
    damage(path, how, marker)
    # GraNd at epoch 1 reads the network kept at epoch 1; forgetting extends the recording
    extend = ["method=grand", "method.epoch=1", "method.runs=1"] if "weights" in victim else EXTEND
    got = in_process(tmp_path, *extend)
    assert got["status"] == "finished" and not marker.exists()
    (line,) = set_aside_warnings(caplog, path)
    assert f"moved aside to {path.name}.corrupt" in line
    if "weights" not in victim:
        kept = got["selection"]["kept_indices_sha256"]
        assert kept == reference["selection"]["kept_indices_sha256"]
        assert _equal_arrays(cache_arrays(tmp_path / "cache"), reference_scores)


def _equal_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[n][k], b[n][k], equal_nan=True) for n in a for k in a[n]
    )


# --- a results folder that fills during a dynamic run -------------------------------------------


def test_rs2_on_a_results_dir_that_fills_after_the_first_checkpoint_keeps_its_metrics(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(results)])
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PRUNEBENCH_CACHE": str(tmp_path / "cache")}
        env.update(PRUNEBENCH_FAULT="fill:checkpoint", OMP_NUM_THREADS="1")
        args = [sys.executable, str(ROOT / "tests" / "faulty_run.py"), *PROXY, "method=rs2"]
        args += ["run.checkpoint_steps=5", f"results.dir={results}", "results.min_free_mb=0"]
        args += [f"hydra.run.dir={tmp_path}/o"]
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert (results / ".checkpoints" / "filler").exists()  # it did fill
        assert not list(results.rglob("*.json")) and not list(results.rglob("*.kept.npz"))
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("prunebench: error:")]
    assert f"cannot write the record to results.dir {results}: [Errno 28]" in line
    fallback = Path(line.split(" record is saved in ")[1].split(" instead")[0])
    record = json.loads(fallback.read_text())
    assert record["status"] == "finished" and 0 <= record["metrics"]["test_acc"] <= 1
    assert record["selection"]["dynamic"]["passes"] == 6
    # its sidecar went with it, whole: the counts of every example it presented
    from benchmarks.subsets import file_sha256, read_subset, record_subset

    sidecar = record_subset(fallback, record)
    assert sidecar.parent == fallback.parent
    assert file_sha256(sidecar) == record["selection"]["subset"]["sha256"]
    presented = record["selection"]["dynamic"]["seen_fraction"] * 6 * 300
    assert read_subset(sidecar).counts.sum() == round(presented)


def test_a_planted_cifar_pickle_is_refused_in_one_line_and_runs_nothing(tmp_path):
    import pickle

    from test_data import cifar_batch, write_pickle

    from benchmarks.data import load_dataset
    from benchmarks.errors import DataError

    folder, marker = tmp_path / "cifar-10-batches-py", tmp_path / "marker"
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(3, "labels", 3 * i))
    write_pickle(folder / "test_batch", cifar_batch(4, "labels", 99))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": Planted(marker)}))
    cfg = {"name": "cifar10", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(DataError) as refused:
        load_dataset(cfg)
    assert str(refused.value).startswith(f"{folder / 'batches.meta'}: not a readable CIFAR pickle")
    assert "pathlib" in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()
