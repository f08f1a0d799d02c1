"""Results on a shared cluster: folders proved writable before the work, a record kept when the
disk fills, and files the group can read."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from patience import HUNG_AFTER_S
from test_data import fake_mnist, mnist_cfg

from benchmarks.cache import ScoreCache
from benchmarks.data import load_dataset
from benchmarks.data.source import TensorSource
from benchmarks.models import build_model
from benchmarks.results import save_record
from benchmarks.train import Checkpointing, TrainSettings, train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train.epochs=1", "data.max_train=200", "data.max_test=100", "run.progress=false"]


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    # the caller's PYTHONPATH stays behind ROOT: .ci/run's chatty run puts tests/chatty there
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PRUNEBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": path}
    args = [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={tmp_path}/out"]
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
    )


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, *options) -> a fresh tmpfs folder, unmounted at the end."""
    mounted = []

    def mount(size: str, *options: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        opts = ",".join([f"size={size}", *options])
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> None:
    """Write until the file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["read-only", "full", "below the floor"])
def test_an_unwritable_results_dir_is_one_line_and_exit_2_before_any_data_is_loaded(
    tmp_path, tmpfs, case
):
    if case == "read-only":
        results, floor = tmpfs("1m", "ro"), 0
    elif case == "full":
        results, floor = tmpfs("64k"), 0
        fill(results)
    else:
        results, floor = tmpfs("64k"), 1
    # a data set that cannot load: the storage error must come before any loading
    proc = run_cli(
        tmp_path,
        "data=fashion_mnist",
        "data.root=/nonexistent",
        f"results.dir={results}",
        f"results.min_free_mb={floor}",
    )
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_error_line(proc)
    assert f"results.dir {results}" in line
    expected = {
        "read-only": "[Errno 30] Read-only file system",
        "full": "[Errno 28] No space left on device",
        "below the floor": "MB free, less than results.min_free_mb=1",
    }[case]
    assert expected in line, line
    assert not list(results.rglob("*.json"))


def test_a_disk_filling_during_training_keeps_the_finished_record_in_a_fallback_file(
    tmp_path, tmpfs
):
    # room for the probe files, not for a checkpoint of the cnn nor for the record
    results = tmpfs("4k")
    proc = run_cli(
        tmp_path, *TINY, f"results.dir={results}", "results.min_free_mb=0", "run.checkpoint_steps=1"
    )
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"cannot write the record to results.dir {results}: [Errno 28]" in line
    fallback = Path(line.split(" record is saved in ")[1].split(" instead")[0])
    assert fallback.is_relative_to(tmp_path / "cache" / "unsaved-records")
    record = json.loads(fallback.read_text())
    assert record["status"] == "finished" and 0 <= record["metrics"]["test_acc"] <= 1
    # the failing checkpoints were said once, as a warning, and training went on
    assert proc.stdout.count("cannot save the checkpoint") == 1, proc.stdout
    assert not list(results.rglob("*.json")) and not list(results.rglob("*.pt"))


def test_files_in_a_shared_folder_are_group_readable_under_umask_002(tmp_path):
    old = os.umask(0o002)
    try:
        fake_mnist(tmp_path / "src" / "mnist")
        load_dataset(mnist_cfg(tmp_path / "src", tmp_path / "cache"))
        record = save_record(
            tmp_path / "results",
            {"cell": {"data": "d", "model": "m", "method": "x", "fraction": 0.5, "seed": 0},
             "run_key": "k", "started_at": "2026-01-01T00:00:00"},
        )  # fmt: skip
        ScoreCache(tmp_path / "cache").load_or_compute(
            "t", {"a": 1}, lambda: ({"s": np.ones(2)}, {})
        )
        torch.manual_seed(0)
        model = build_model("mlp", 1, 2, (4, 4), (0.5,), (0.25,))
        x, y = torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.arange(8) % 2
        ckpt = Checkpointing(tmp_path / "results" / ".checkpoints" / "k.pt", every_steps=1)
        settings = TrainSettings(epochs=2, batch_size=4)
        train(model, TensorSource(x, y), settings, 4, order_seed=0, checkpointing=ckpt)
    finally:
        os.umask(old)
    files = [
        record,
        *(tmp_path / "cache" / "data").glob("*.pt"),
        *(tmp_path / "cache" / "scores").glob("*.npz"),
        ckpt.path,
    ]
    assert len(files) == 4
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o664, path  # rw for owner and group, r for others
