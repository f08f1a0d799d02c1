"""python -m analysis pareto: the Pareto front against a brute-force check."""

from io import StringIO

import numpy as np
import pandas as pd
import pytest
from handmade import record, write

from analysis.__main__ import main


def _front_brute_force(points):
    """Points that no other point beats: at most as costly, at least as accurate, one strictly."""
    return {
        name
        for name, (cost, acc) in points.items()
        if not any(
            c <= cost and a >= acc and (c < cost or a > acc)
            for other, (c, a) in points.items()
            if other != name
        )
    }


def _pareto_csv(capsys, results, *extra):
    assert main(["pareto", str(results), "--format", "csv", *extra]) == 0
    return pd.read_csv(StringIO(capsys.readouterr().out))


@pytest.mark.parametrize("seed", range(5))
def test_the_front_is_the_brute_force_front(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    points = {}
    runs = [record("full", 0.0, 0.95, compute=1000.0)]
    points[("full", 0.0)] = (1000.0, 0.95)
    for method in ("random", "el2n", "forgetting", "infobatch"):
        for fraction in (0.3, 0.5, 0.7):
            # coarse values, so that ties in cost and in accuracy occur
            cost = float(rng.integers(1, 8) * 200)
            acc = float(rng.integers(80, 97)) / 100
            runs.append(record(method, fraction, acc, compute=cost))
            points[(method, fraction)] = (cost, acc)
    table = _pareto_csv(capsys, write(tmp_path / "results", runs))
    found = {
        (m, 0.0 if full else f)
        for m, f, full in zip(table.method, table.fraction, table.full_data, strict=True)
    }
    assert found == _front_brute_force(points)
    assert list(table["compute"]) == sorted(table["compute"])  # cheapest first


def test_seeds_are_averaged_and_compute_is_relative_to_full_data(tmp_path, capsys):
    runs = [
        record("full", 0.0, 0.90, compute=1000.0, seed=0),
        record("full", 0.0, 0.92, compute=1000.0, seed=1),
        record("random", 0.5, 0.93, compute=400.0, seed=0),
        record("random", 0.5, 0.95, compute=600.0, seed=1),
        record("el2n", 0.5, 0.80, compute=900.0),
    ]
    results = write(tmp_path / "results", runs)
    table = _pareto_csv(capsys, results, "--figure", str(tmp_path / "pareto"))
    assert list(table.method) == ["random"]  # 94% at 500 beats the full data's 91% at 1000
    assert table.value.iloc[0] == pytest.approx(94.0)
    assert table.compute_vs_full.iloc[0] == pytest.approx(0.5)
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"pareto{suffix}").stat().st_size > 1000


def test_records_without_compute_are_named_and_left_out(tmp_path, capsys):
    runs = [record("random", 0.5, 0.9, compute=10.0), record("el2n", 0.5, 0.95)]
    assert main(["pareto", str(write(tmp_path / "r", runs))]) == 0
    captured = capsys.readouterr()
    assert "left out 1 point(s) whose records state no compute" in captured.err
    assert "| random |" in captured.out
