"""python -m analysis rank: average ranks, Friedman and Nemenyi against a worked example."""

import math

import pandas as pd
import pytest
from handmade import record, write
from scipy import stats

from analysis.__main__ import main

# 3 methods in 4 cells (2 data sets x 2 fractions), one seed: rank 1 = best accuracy
CELLS = {
    ("digits", 0.3): {"a": 0.9, "b": 0.8, "c": 0.7},  # a 1, b 2, c 3
    ("digits", 0.5): {"a": 0.9, "b": 0.7, "c": 0.8},  # a 1, c 2, b 3
    ("fashion", 0.3): {"a": 0.8, "b": 0.9, "c": 0.7},  # b 1, a 2, c 3
    ("fashion", 0.5): {"a": 0.9, "b": 0.8, "c": 0.8},  # a 1, b and c share 2.5
}
AVERAGE = {"a": (1 + 1 + 2 + 1) / 4, "b": (2 + 3 + 1 + 2.5) / 4, "c": (3 + 2 + 3 + 2.5) / 4}


def _results(tmp_path, extra=()):
    runs = [record(m, f, acc, data=d) for (d, f), row in CELLS.items() for m, acc in row.items()]
    return write(tmp_path / "results", [*runs, *extra])


def _csv(capsys, *argv):
    assert main(["rank", *map(str, argv), "--format", "csv"]) == 0
    from io import StringIO

    return pd.read_csv(StringIO(capsys.readouterr().out))


def test_average_ranks_friedman_and_cd_of_a_worked_example(tmp_path, capsys):
    table = _csv(capsys, _results(tmp_path)).set_index("method")
    assert table["average_rank"].to_dict() == pytest.approx(AVERAGE)
    assert list(table.index) == ["a", "b", "c"]
    # Friedman by hand: 12N / (k(k+1)) * (sum R^2 - k(k+1)^2 / 4), over the tie correction
    # 1 - sum(t^3 - t) / (N k (k^2 - 1)) (one tie of 2 in one cell)
    n, k = 4, 3
    chi2 = 12 * n / (k * (k + 1)) * (sum(r * r for r in AVERAGE.values()) - k * (k + 1) ** 2 / 4)
    chi2 /= 1 - (2**3 - 2) / (n * k * (k * k - 1))
    assert table["friedman_chi2"].iloc[0] == pytest.approx(chi2)
    columns = [[CELLS[c][m] for c in CELLS] for m in "abc"]
    assert table["friedman_p"].iloc[0] == pytest.approx(stats.friedmanchisquare(*columns).pvalue)
    assert table["friedman_p"].iloc[0] == pytest.approx(math.exp(-chi2 / 2))  # chi2 with 2 dof
    # Demšar (2006) Table 5: q_0.05 = 2.343 for k = 3
    assert table["nemenyi_cd"].iloc[0] == pytest.approx(
        2.343 * math.sqrt(k * (k + 1) / (6 * n)), abs=1e-3
    )
    # Nemenyi: |R_a - R_c| / sqrt(k(k+1)/(6N)) against the studentized range over sqrt(2)
    z = (AVERAGE["c"] - AVERAGE["a"]) / math.sqrt(k * (k + 1) / (6 * n))
    want = stats.studentized_range.sf(z * math.sqrt(2), k, math.inf)
    assert table.loc["c", "nemenyi_p_vs_best"] == pytest.approx(want, rel=1e-3)


def test_a_method_missing_from_cells_is_left_out_and_named(tmp_path, capsys):
    partial = [record("d", 0.3, 0.95, data="digits")]
    results = _results(tmp_path, partial)
    table = _csv(capsys, results).set_index("method")
    assert set(table.index) == {"a", "b", "c"}
    assert main(["rank", str(results)]) == 0
    out = capsys.readouterr().out
    assert "left out d: it ran in 1 of 4 cells" in out
    assert "Friedman chi2(2)" in out


def test_markdown_latex_and_the_cd_diagram(tmp_path, capsys):
    results = _results(tmp_path)
    assert main(["rank", str(results), "--format", "latex", "--figure", str(tmp_path / "cd")]) == 0
    out = capsys.readouterr().out
    assert "\\begin{tabular}" in out and "Friedman" in out
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"cd{suffix}").stat().st_size > 1000


def test_too_few_methods_is_one_line_and_exit_2(tmp_path, capsys):
    results = write(tmp_path / "r", [record("a", 0.3, 0.9), record("b", 0.3, 0.8)])
    assert main(["rank", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 3 methods" in err


def test_blocks_by_seed_double_the_evidence_of_a_repeated_seed(tmp_path, capsys):
    runs = [
        record(m, f, acc, data=d, seed=s)
        for (d, f), row in CELLS.items()
        for m, acc in row.items()
        for s in (0, 1)
    ]
    results = write(tmp_path / "results", runs)
    by_cell = _csv(capsys, results).set_index("method")
    by_seed = _csv(capsys, results, "--by-seed").set_index("method")
    assert by_seed["average_rank"].to_dict() == pytest.approx(AVERAGE)
    assert by_seed["cells"].iloc[0] == 8
    # the same ranks in twice the blocks: Friedman's statistic doubles (12N / (k(k+1)) ...)
    assert by_seed["friedman_chi2"].iloc[0] == pytest.approx(2 * by_cell["friedman_chi2"].iloc[0])
