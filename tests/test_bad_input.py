"""Bad input as a user meets it: one line naming the value and what is allowed, exit 2, before
any data is loaded, and no record."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import benchmarks.pipeline
from benchmarks.errors import ConfigError
from benchmarks.pipeline import run

ROOT = Path(__file__).resolve().parent.parent


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    args = [sys.executable, str(ROOT / "run.py"), *overrides]
    args += [f"hydra.run.dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/multi"]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def run_in_process(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*overrides, f"results.dir={tmp_path}/results", f"cache.dir={tmp_path}/c"],
        )
        return run(cfg, progress=False)


@pytest.fixture
def no_data(monkeypatch):
    """Loading any data set fails the test: the error must come first."""

    def tripwire(*args, **kwargs):
        raise AssertionError("data was loaded before the bad value was refused")

    monkeypatch.setattr(benchmarks.pipeline, "load_dataset", tripwire)


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("train.gamma=-1", "in (0, 1]"),
        ("train.gamma=0", "in (0, 1]"),
        ("train.gamma=nan", "in (0, 1]"),
        ("train.lr=inf", "> 0"),
        ("train.lr=nan", "> 0"),
        ("train.lr=0", "> 0"),
        ("train.momentum=5", "in [0, 1)"),
        ("train.momentum=-1", "in [0, 1)"),
        ("train.weight_decay=-1", ">= 0"),
        ("train.weight_decay=inf", ">= 0"),
        ("train.label_smoothing=2", "in [0, 1)"),
        ("train.label_smoothing=1", "in [0, 1)"),
    ],
)
def test_a_training_hyper_parameter_out_of_range_is_refused_before_any_data(
    tmp_path, no_data, override, allowed
):
    key = override.split("=")[0]
    with pytest.raises(
        ConfigError, match=rf"^{key}=\S+ must be a finite number {re.escape(allowed)}$"
    ):
        run_in_process(tmp_path, override)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_bad_hyper_parameters_from_the_command_line_are_one_line_each_and_exit_2(tmp_path):
    proc = run_cli(tmp_path, "-m", "train.lr=inf,nan", "train.momentum=5")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "prunebench: error: train.lr=inf must be a finite number > 0",
        "prunebench: error: train.lr=nan must be a finite number > 0",
    ], proc.stderr
    assert not (tmp_path / "results").exists()


TINY = ["model=mlp", "data.max_train=200", "data.max_test=100", "train.epochs=1"]


@pytest.mark.parametrize("override", ["seed=-1", f"seed={2**63}", "data.val_seed=-3"])
def test_a_seed_out_of_range_is_one_line(tmp_path, no_data, override):
    with pytest.raises(ConfigError, match=r"is out of range: seeds are integers in \[0, 2\*\*63\)"):
        run_in_process(tmp_path, override)


def test_a_seed_too_long_to_read_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(tmp_path, "seed=" + "1" * 5000)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "an override holds an integer too long to read" in line and "[0, 2**63)" in line


def test_a_million_proxy_runs_are_refused_before_any_data(tmp_path, no_data):
    with pytest.raises(ConfigError, match=r"^method.runs=1000000 must be in \[1, 1000\]"):
        run_in_process(tmp_path, "method=el2n", "method.runs=1000000")


def test_the_skip_line_names_where_the_record_is_now_and_keeps_the_direction(tmp_path):
    from benchmarks.summary import summary_lines

    first = run_in_process(tmp_path, *TINY)
    moved = tmp_path / "moved"
    (tmp_path / "results").rename(moved)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=[*TINY, f"results.dir={moved}", f"cache.dir={tmp_path}/c"]
        )
        again = run(cfg, progress=False)
    (line,) = summary_lines(again)
    assert line.endswith(
        f"skipped, finished record exists: {moved / Path(first['record_path']).name}"
    )
    assert "(hard) | seed 0" in line


def test_a_long_method_label_gives_bounded_file_names_and_the_rerun_finds_its_record(tmp_path):
    label = "method.label=" + "a-very-long-label-" * 12
    first = run_in_process(tmp_path, *TINY, label)
    names = [p.name for p in (tmp_path / "results").iterdir() if p.is_file()]
    assert len(names) == 2 and all(len(n) < 180 for n in names)  # record and kept-subset sidecar
    assert first["run_key"] in Path(first["record_path"]).name
    assert run_in_process(tmp_path, *TINY, label).get("skipped")


def test_a_sidecar_left_by_a_killed_run_is_removed_with_the_cells_next_record(tmp_path):
    import shutil

    first = run_in_process(tmp_path, *TINY)
    record = Path(first["record_path"])
    sidecar = record.with_name(record.name.removesuffix(".json") + ".kept.npz")
    orphan = sidecar.with_name(
        sidecar.name.replace(first["run_key"] + "_", first["run_key"] + "_1")
    )
    shutil.copy(sidecar, orphan)  # a run of this cell killed after its sidecar, before its record
    run_in_process(tmp_path, *TINY, "run.skip_completed=false")
    assert not orphan.exists() and sidecar.exists()
    assert len(list((tmp_path / "results").glob("*.kept.npz"))) == 2  # one per record


def test_the_analysis_cli_skips_an_unreadable_record_with_a_note(tmp_path, capsys):
    from analysis.__main__ import main as analysis_main

    run_in_process(tmp_path, *TINY)
    broken = tmp_path / "results" / "cut-short.json"
    broken.write_text('{"schema": 1, "cell"')
    assert (
        analysis_main(["collect", str(tmp_path / "results"), "--out", str(tmp_path / "t.csv")]) == 0
    )
    err = capsys.readouterr().err
    assert f"analysis: note: skipped '{broken}': not a readable record" in err


def write_tree(root: Path, per_class: int, constant_channel: bool = True) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                if constant_channel:
                    pixels[..., 2] = 7  # the blue channel never varies: its std is 0
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_a_constant_image_channel_trains_to_a_finite_result(tmp_path):
    write_tree(tmp_path / "tree", per_class=10)
    record = run_in_process(
        tmp_path, "data=imagefolder", f"data.path={tmp_path}/tree", "model=mlp", "train.epochs=2"
    )
    assert record["data"]["std"][2] < 1e-12  # 0 up to rounding
    assert record["status"] == "finished" and np.isfinite(record["metrics"]["test_loss"])


def test_an_image_tree_whose_class_folders_hold_no_images_says_so(tmp_path):
    from benchmarks.errors import DataError

    for split in ("train", "test"):
        (tmp_path / "tree" / split / "cat").mkdir(parents=True)
        (tmp_path / "tree" / split / "cat" / "notes.txt").write_text("no image")
    with pytest.raises(DataError, match=r"the class folders of train and test hold no images"):
        run_in_process(tmp_path, "data=imagefolder", f"data.path={tmp_path}/tree", "model=mlp")


def test_a_fraction_that_keeps_fewer_examples_than_classes_is_refused_before_scoring(tmp_path):
    from benchmarks.errors import DataError

    with pytest.raises(DataError, match=r"keeps \d+ of the \d+ training examples, fewer than"):
        run_in_process(tmp_path, "model=mlp", "data.val_size=0.99", "method=el2n")
    assert not (tmp_path / "c" / "scores").exists()  # nothing was scored


def test_a_kept_subset_missing_classes_is_said_in_one_warning(tmp_path, caplog):
    from benchmarks.data import load_dataset

    labels = load_dataset({"name": "digits"}).train_y.numpy()
    np.save(tmp_path / "by_label.npy", labels.astype(np.float64))  # keeps the highest labels
    record = run_in_process(
        tmp_path, *TINY, "method=precomputed", f"method.path={tmp_path}/by_label.npy"
    )
    assert record["selection"]["kept_per_class"] == [0] * 5 + [20] * 5
    (line,) = [r.getMessage() for r in caplog.records if "kept subset" in r.getMessage()]
    assert line.startswith("the kept subset (100 of 200 examples, prune.fraction=0.5) has no ")
    assert "example of 5 of 10 classes" in line and "prune.balance=true" in line


@pytest.mark.parametrize("case", ["empty npy", "empty pt", "pt dict", "bad sidecar", "index 1e19"])
def test_a_malformed_score_file_is_one_line(tmp_path, case):
    import torch

    from methods.precomputed import read_score_file

    path = tmp_path / {"empty pt": "s.pt", "pt dict": "s.pt", "index 1e19": "s.csv"}.get(
        case, "s.npy"
    )
    if case in ("empty npy", "empty pt"):
        path.write_bytes(b"")
    elif case == "pt dict":
        torch.save({"scores": torch.ones(3)}, path)
    elif case == "bad sidecar":
        np.save(path, np.ones(3))
        path.with_name("s.npy.json").write_text("{not json")
    else:
        path.write_text("index,score\n1e19,0.5\n3,0.1\n")
    with pytest.raises(ConfigError, match=rf"^method.path={path}: ") as refused:
        read_score_file(str(path), "score")
    assert "\n" not in str(refused.value)


def test_a_hostile_model_weights_file_is_refused_in_one_line_and_runs_nothing(tmp_path):
    import torch
    from test_faults import Planted

    from benchmarks.library_models import torchvision_body

    marker, weights = tmp_path / "marker", tmp_path / "w.pt"
    torch.save({"conv1.weight": Planted(marker)}, weights)
    with pytest.raises(ConfigError, match=rf"^model.weights={weights}: cannot read it \(.*refused"):
        torchvision_body(3, (32, 32), "resnet18", weights=str(weights))
    assert not marker.exists()


def test_a_full_disk_under_torch_save_is_named_no_space_left(tmp_path):
    import errno

    import torch
    from test_durability import fill

    from benchmarks.atomic import atomic_write

    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        fill(folder)
        with pytest.raises(OSError) as full:
            atomic_write(folder / "w.pt", lambda f: torch.save({"w": torch.ones(10**5)}, f))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    assert full.value.errno == errno.ENOSPC and "No space left on device" in str(full.value)


def test_two_sweeps_sharing_a_sweep_folder_read_only_their_own_exit_codes(tmp_path, monkeypatch):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from benchmarks import cli

    def job(launcher: cli.SweepOutcomes, num: int, code: cli.ExitCode) -> None:
        cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / str(num))}}})
        cfg.hydra.mode = RunMode.MULTIRUN
        (tmp_path / str(num)).mkdir(exist_ok=True)
        launcher.on_job_start(cfg)
        cli.report(code)
        launcher.on_job_end(cfg, None)

    sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    monkeypatch.setenv(cli.SweepOutcomes.LAUNCH, "restored after the test")
    monkeypatch.setattr(cli, "_outcomes", [])
    diverging, clean = cli.SweepOutcomes(), cli.SweepOutcomes()
    diverging.on_multirun_start(sweep)
    job(diverging, 0, cli.ExitCode.DIVERGED)  # the same job folders, the same second
    launch = os.environ[cli.SweepOutcomes.LAUNCH]
    clean.on_multirun_start(sweep)
    job(clean, 0, cli.ExitCode.FINISHED)
    monkeypatch.setattr(cli, "_outcomes", [])
    clean.on_multirun_end(sweep)
    assert cli.worst() == cli.ExitCode.FINISHED
    monkeypatch.setenv(cli.SweepOutcomes.LAUNCH, launch)
    diverging.on_multirun_end(sweep)
    assert cli.worst() == cli.ExitCode.DIVERGED
