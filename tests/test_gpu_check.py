"""benchmarks/speed/gpu_check.sh at toy size on the CPU (GPU_CHECK_TOY=1): its stream_feed
stage runs the streamed data feed end to end and reports it in the summary."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_archive(path: Path, images: int = 48) -> None:
    """A stand-in for cifar10-jpg.tar.gz: 32 x 32 JPEGs of two classes under train/."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for i in range(images):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            info = tarfile.TarInfo(f"cifar10/train/{('cat', 'dog')[i % 2]}/{i:04d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)


def test_the_toy_check_runs_the_stream_feed_stage(tmp_path):
    (tmp_path / "data").mkdir()
    write_archive(tmp_path / "data" / "cifar10-jpg.tar.gz")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GPU_CHECK_TOY": "1",
        "GPU_CHECK_STAGES": "stream_feed",
        "OUT": str(out),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "PRUNEBENCH_DATA": str(tmp_path / "data"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "speed" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], (out / "stream_feed.log").read_text())
    summary = (out / "summary.md").read_text()
    stages = [line.split("|")[1].strip() for line in summary.splitlines() if "| rc " in line]
    assert stages == ["stream_feed"]
    assert "| stream_feed | rc 0 |" in summary
    feed = summary.split("## stream feed", 1)[1]
    assert "| cpu |" in feed and "waiting for data" in feed
    with tarfile.open(out / "records.tar.gz") as records:
        result = json.load(records.extractfile("stream_feed.json"))
    assert result["images"] == 48
    assert result["decode"]["cpu"]["images"] == 2 * 8  # --decode-batches x --batch-size
    row = result["feed"]["cpu"]
    assert row["steps"] == 4
    assert 0 <= row["waiting_seconds"] <= row["seconds"]
    assert row["waiting_share"] == row["waiting_seconds"] / row["seconds"]
