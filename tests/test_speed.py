"""The speed benchmark: its ratios and extrapolations by hand, and one tiny real run."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from patience import HUNG_AFTER_S

from benchmarks.speed import training as speed

ROOT = Path(__file__).resolve().parent.parent


def _args(**kw):
    base = dict(
        device="cpu",
        model="cnn",
        batch_size=128,
        steps=40,
        warmup=3,
        score_examples=10_000,
        grand_examples=1024,
        threads=2,
        repeats=1,
    )
    return argparse.Namespace(**{**base, **kw})


def _result(seconds, **extra):
    return {"seconds": seconds, "peak_rss_bytes": 2**30, "peak_gpu_bytes": None, **extra}


def test_report_divides_what_it_says_and_extrapolates_to_the_cifar_epoch():
    results = {
        "prunebench_train": _result(10.0, warmup_seconds=1.0),
        "premade_batches_train": _result(8.0),
        "torchvision_train": _result(20.0),
        "eval_forward": _result(4.0),
        "el2n_scoring": _result(5.0),
        "train_steps_grand_set": _result(2.0),
        "grand_exact": _result(2.5),
        "grand_naive_loop": _result(100.0),
        "prunebench_train_compiled": _result(7.5, warmup_seconds=30.0),
    }
    text = "\n".join(speed.report(results, _args()))
    assert "| prunebench train / torchvision DataLoader train | 0.50x | < 1 |" in text
    assert "| prunebench train / pre-made tensor batches | 1.25x | <= 1.05 |" in text
    assert "| EL2N scoring / bare eval forward | 1.25x | <= 1.1 |" in text
    assert "| exact GraNd / training steps, same examples | 1.25x | <= 1.5 |" in text
    assert "| naive per-example loop / exact GraNd | 40.00x | > 1 |" in text
    assert "| train.compile=true / eager train (after compiling) | 0.75x | < 1 to keep |" in text
    assert "30.0 s compiled, 1.0 s eager" in text
    # 10 s for 40 steps; an epoch of 50,000 at batch 128 is 391 steps
    assert "| one training epoch (391 steps of 128) | 97.8 |" in text
    assert "| Data Diet protocol, 200 epochs | 19550.0 |" in text
    assert "| EL2N scoring of 50,000 examples | 25.0 |" in text  # 5 s per 10,000
    assert "| exact GraNd of 50,000 examples | 122.1 |" in text  # 2.5 s per 1,024
    assert "cudnn" not in text  # the autotuner is measured on CUDA only


def test_rounds_are_interleaved_and_the_median_reported(monkeypatch):
    calls = []
    timings = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 9.0, 4.0])}

    def fake_measure(name, args):
        calls.append(name)
        return {
            "seconds": next(timings[name]),
            "peak_rss_bytes": len(calls),
            "peak_gpu_bytes": None,
        }

    monkeypatch.setattr(speed, "measure", fake_measure)
    results = speed.measure_all(["a", "b"], _args(repeats=3))
    assert calls == ["a", "b"] * 3
    assert results["a"]["seconds"] == 2.0 and results["a"]["repeats"] == [3.0, 1.0, 2.0]
    assert results["b"]["seconds"] == 5.0 and results["b"]["peak_rss_bytes"] == 6


def test_the_switches_measured_depend_on_device_and_flags():
    assert speed.bench_names(_args(compile=False)) == list(speed.BENCHES)
    assert speed.bench_names(_args(compile=True))[-1] == "prunebench_train_compiled"
    cuda = speed.bench_names(_args(compile=False, device="cuda"))
    assert cuda[-1] == "prunebench_train_no_autotune"


def test_a_tiny_run_on_the_real_archive_measures_everything(data_root, data_cache_dir, tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            f"--data-root={data_root}",
            f"--cache-dir={data_cache_dir}",
            "--model=mlp",
            "--batch-size=16",
            "--steps=2",
            "--warmup=1",
            "--score-examples=64",
            "--eval-batch=32",
            "--grand-examples=32",
            "--naive-examples=4",
            "--workers=1",
            "--repeats=1",
            "--threads=1",
            f"--out={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(out.read_text())
    assert list(payload["results"]) == list(speed.BENCHES)
    assert all(r["seconds"] > 0 and r["peak_rss_bytes"] > 0 for r in payload["results"].values())
    assert payload["table"] == proc.stdout.strip().splitlines()
    assert payload["torch"] and payload["python"] and payload["gpu"] is None
    assert "| one training epoch (3125 steps of 16) |" in proc.stdout


def test_grand_memory_reports_the_peak_growth_per_example():
    from benchmarks.speed import grand_memory

    args = argparse.Namespace(
        device="cpu", model="resnet18", image_size=32, chunk_size=256, threads=1
    )
    row = {
        "examples": 1_000,
        "seconds": 40.0,
        "cpu_seconds": 39.5,
        "rss_before_bytes": 1000 * 2**20,
        "peak_rss_bytes": 1000 * 2**20 + 1_000 * 3 * 1024,  # 3 KiB per example
        "peak_gpu_bytes": None,
    }
    text = "\n".join(grand_memory.report([row], args))
    assert "| 1,000 | 40.0 | 39.5 | 1000 | 1003 | 3.0 |  |" in text


def test_grand_memory_refuses_sizes_below_one_chunk():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "grand_memory",
            "--examples",
            "100",
            "--chunk-size",
            "256",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--examples [100]" in proc.stderr
