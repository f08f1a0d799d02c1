"""The stream benchmark, run at toy size: every reader measured at every worker count over
interleaved rounds, the table's ratio the ratio of the medians, bytes proportional to the
kept share. The speeds themselves are the benchmark's, not a test's."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks.speed import stream


def test_the_benchmark_reports_each_worker_count_from_interleaved_rounds(
    data_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PRUNEBENCH_DATA", str(data_root))
    out = tmp_path / "stream.json"
    stream.main(
        [
            "--images",
            "60",
            "--batches",
            "2",
            "--batch-size",
            "6",
            "--workers",
            "1",
            "2",
            "--repeats",
            "3",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert [row["workers"] for row in result["readers"]] == [1, 2]
    for row in result["readers"]:
        for reader in ("streamed", "torchvision"):
            rounds = row[f"{reader}_each_round"]
            assert len(rounds) == 3
            assert row[f"{reader}_images_per_s_per_worker"] == statistics.median(rounds)
        assert row["streamed_over_torchvision"] == pytest.approx(
            row["streamed_images_per_s_per_worker"] / row["torchvision_images_per_s_per_worker"]
        )
    table = capsys.readouterr().out
    assert "| 1 |" in table and "| 2 |" in table
    shares = {k: v["share_of_full"] for k, v in result["epoch_bytes"].items()}
    assert shares["1"] == 1.0
    assert shares["0.5"] == pytest.approx(0.5, abs=0.15)
    assert shares["0.1"] == pytest.approx(0.1, abs=0.06)


def test_one_timed_batch_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        stream.main(["--batches", "1", "--work", str(tmp_path / "never")])
    assert exit_.value.code == 2
    assert not (tmp_path / "never").exists()
