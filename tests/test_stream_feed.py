"""The stream feed benchmark (benchmarks/speed/stream_feed.py): its waiting share counted by
hand on a scripted clock, and bad options refused in one line before any work."""

from pathlib import Path

import pytest
import torch

from benchmarks.speed import stream_feed
from benchmarks.speed.stream_feed import Timeline, waiting_share


def test_the_waiting_share_is_the_time_between_a_step_and_its_next_batch():
    """Data path 5, 0, 2, 1 s; each step 7 s: 8 s of 36 waited for data."""
    now = [100.0]

    def batches():
        for k, seconds in enumerate((5.0, 0.0, 2.0, 1.0)):
            now[0] += seconds
            yield k

    trained = []

    def step(batch):
        trained.append(batch)
        now[0] += 7.0

    row = waiting_share(batches(), step, Timeline(torch.device("cpu"), lambda: now[0]))
    assert trained == [0, 1, 2, 3]
    assert row["steps"] == 4
    assert row["seconds"] == pytest.approx(36.0)
    assert row["waiting_seconds"] == pytest.approx(8.0)
    assert row["waiting_share"] == pytest.approx(8.0 / 36.0)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--decode", "gpu"], "--decode gpu is not one of cpu, cuda"),
        (["--device", "cpu", "--decode", "cuda"], "--decode cuda needs --device cuda"),
        (["--device", "cpu", "--steps", "0"], "--steps=0 must be >= 1"),
        (["--device", "cpu", "--images", "8", "--batch-size", "16"], "--images=8 must be"),
    ],
)
def test_bad_options_are_one_line_before_any_work(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEBENCH_DATA", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        stream_feed.main([*argv, "--work", str(tmp_path / "work")])
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "work").exists()


def test_a_missing_archive_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEBENCH_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        stream_feed.main(["--device", "cpu", "--work", str(tmp_path / "work")])
    assert str(Path(tmp_path) / "cifar10-jpg.tar.gz") in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
