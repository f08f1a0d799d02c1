"""analysis: leaderboards, plots and score studies, checked against the raw records.

The records come from one real multirun of run.py (digits, mlp, 1 and 2 epochs); every
expected number is recomputed here from the JSON files with pandas, numpy and scipy.
"""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from patience import HUNG_AFTER_S
from scipy import stats
from sklearn.metrics import roc_auc_score

from analysis.__main__ import main
from analysis.collect import collect, protocol_config
from analysis.plot import line_style
from analysis.stats import difference
from benchmarks.wandb_logger import cell_tags, flatten, run_summary

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("random", "full", "input_norm")
SWEEPS = (
    # 3 methods x 2 fractions x 2 seeds x 2 epoch protocols (full: once per seed and protocol)
    (f"method={','.join(METHODS)}", "prune.fraction=0.3,0.5", "seed=0,1", "train.epochs=1,2"),
    # a scored method with a proxy cost and a score epoch, one seed only
    (
        "method=el2n",
        "method.runs=1",
        "method.epoch=1",
        "prune.fraction=0.3,0.5",
        "seed=0",
        "train.epochs=1",
    ),
)
N_RECORDS = 22


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real records of two concurrent multiruns of run.py on digits with an MLP."""
    tmp = tmp_path_factory.mktemp("analysis")
    env = {
        **os.environ,
        "PRUNEBENCH_CACHE": str(tmp / "cache"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run.py"),
                "-m",
                *sweep,
                "model=mlp",
                f"results.dir={tmp / 'results'}",
                f"hydra.sweep.dir={tmp / f'sweep{i}'}",
            ],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, sweep in enumerate(SWEEPS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=HUNG_AFTER_S)
        assert proc.returncode == 0, err
    return tmp / "results"


@pytest.fixture
def results_copy(results_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(results_dir, tmp_path / "results"))


def raw_records(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.rglob("*.json"))]


def raw_frame(directory: Path) -> pd.DataFrame:
    """One row per record, straight from the JSON files."""
    return pd.DataFrame(
        {
            "epochs": r["config"]["train"]["epochs"],
            "method": r["cell"]["method"],
            "fraction": r["cell"]["fraction"],
            "seed": r["cell"]["seed"],
            "acc": 100 * r["metrics"]["test_acc"],
            "proxy_epochs": r["selection"]["score_cost"]["proxy_epochs"],
            "score_seconds": r["selection"]["score_cost"]["seconds"],
        }
        for r in raw_records(directory)
    )


def expected(directory: Path) -> pd.DataFrame:
    """Mean, std (ddof 1) and count of test accuracy in % per (epochs, method, fraction)."""
    return (
        raw_frame(directory)
        .groupby(["epochs", "method", "fraction"])["acc"]
        .agg(["mean", "std", "count"])
    )


def per_seed(directory: Path, epochs: int, method: str, fraction: float) -> dict[int, float]:
    raw = raw_frame(directory)
    same = raw[(raw.epochs == epochs) & (raw.method == method) & (raw.fraction == fraction)]
    return dict(zip(same.seed, same.acc, strict=True))


def expected_delta(
    directory: Path, epochs: int, method: str, fraction: float
) -> tuple[float, float, float, str]:
    """Difference to random and its 95% CI, by scipy: paired when the seeds match."""
    mine, rand = (
        per_seed(directory, epochs, method, fraction),
        per_seed(directory, epochs, "random", fraction),
    )
    a, b = np.array(list(mine.values())), np.array(list(rand.values()))
    if set(mine) == set(rand):
        seeds = sorted(mine)
        a, b = np.array([mine[s] for s in seeds]), np.array([rand[s] for s in seeds])
        ci = stats.ttest_rel(a, b).confidence_interval(0.95)
        return a.mean() - b.mean(), ci.low, ci.high, "paired"
    if min(a.size, b.size) < 2:
        return a.mean() - b.mean(), np.nan, np.nan, "welch"
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return a.mean() - b.mean(), ci.low, ci.high, "welch"


def best_methods(want: pd.DataFrame, epochs: int, fraction: float) -> set[str]:
    """Methods whose mean, as shown with 2 decimals, is the column's highest."""
    column = want.xs(epochs).xs(fraction, level="fraction").drop("full", errors="ignore")
    shown = column["mean"].round(2)
    return set(shown[shown == shown.max()].index)


def run_main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def leaderboard_csv(capsys: pytest.CaptureFixture, directory: Path) -> pd.DataFrame:
    code, out, err = run_main(capsys, "leaderboard", directory, "--format", "csv")
    assert code == 0, err
    return pd.read_csv(StringIO(out))


def test_speed_only_switches_leave_the_protocol_alone():
    base = {"data": {"name": "digits", "root": "/a"}, "model": {"name": "cnn"}}
    eager = protocol_config({**base, "train": {"epochs": 5}})
    compiled = {**base, "train": {"epochs": 5, "compile": True, "cudnn_benchmark": False}}
    assert protocol_config(compiled) == eager
    assert protocol_config({**base, "train": {"epochs": 6}}) != eager
    assert (
        protocol_config({**base, "data": {"name": "digits", "root": "/b"}, "train": {"epochs": 5}})
        == eager
    )


def test_collect_has_one_row_per_record_with_protocol_columns(results_dir, tmp_path):
    shutil.copytree(results_dir, tmp_path / "nested" / "deeper")
    (tmp_path / "nested" / ".digits_half_written.json").write_text("{")
    found = collect(str(tmp_path))
    assert len(found.all_runs) == len(found.runs) == N_RECORDS and found.notes == []
    runs = found.runs
    assert set(runs.budget) == {"iterations"} and (runs.kept <= runs.total).all()
    assert set(runs.total) == {1437}
    el2n = runs[runs.method == "el2n"]
    assert set(el2n.score_epoch) == {1} and (el2n.proxy_epochs > 0).all()
    assert runs[runs.method != "el2n"].score_epoch.isna().all()
    assert runs.groupby("epochs")["protocol"].nunique().tolist() == [1, 1]
    assert runs["protocol"].nunique() == 2


def test_leaderboard_csv_numbers_match_the_raw_records(results_dir, capsys):
    table = leaderboard_csv(capsys, results_dir)
    want, raw = expected(results_dir), raw_frame(results_dir)
    assert len(table) == len(want) == 12
    for row in table.itertuples():
        ref = want.loc[(row.epochs, row.method, row.fraction)]
        assert row.n == ref["count"] and row.mean == pytest.approx(ref["mean"])
        assert row.std == pytest.approx(ref["std"], nan_ok=True)
        assert row.best == (row.method in best_methods(want, row.epochs, row.fraction))
        costs = raw[(raw.epochs == row.epochs) & (raw.method == row.method)]
        assert row.proxy_epochs == pytest.approx(costs.proxy_epochs.mean())
        assert row.score_seconds == pytest.approx(costs.score_seconds.mean())
        if row.method in ("random", "full"):
            assert np.isnan(row.delta)
            continue
        delta, low, high, kind = expected_delta(results_dir, row.epochs, row.method, row.fraction)
        assert row.baseline == "random" and row.ci_kind == kind
        assert (row.delta, row.ci_low, row.ci_high) == pytest.approx(
            (delta, low, high), nan_ok=True
        )
    assert set(table.loc[table.method == "el2n", "ci_kind"]) == {"welch"}
    assert set(table.loc[table.method == "el2n", "score_epoch"]) == {1}


def test_markdown_and_latex_show_the_same_numbers_and_the_protocol(results_dir, capsys):
    want = expected(results_dir)
    code, md, _ = run_main(capsys, "leaderboard", results_dir)
    assert code == 0
    code, tex, _ = run_main(capsys, "leaderboard", results_dir, "--format", "latex")
    assert code == 0
    sections = md.split("### ")[1:]
    assert len(sections) == 2 and tex.count("\\begin{table}") == 4
    for epochs, section in zip((1, 2), sections, strict=True):
        assert section.startswith(f"digits / mlp: iterations budget, {epochs} epoch")
        assert "mean ± std over 2 seeds (0, 1)" in section
        full = want.loc[(epochs, "full", 0.0)]
        assert f"Full data (no pruning): {full['mean']:.2f} ± {full['std']:.2f}." in section
        body, deltas = section.split("Difference to random")
        for (method, fraction), ref in want.xs(epochs).drop("full").iterrows():
            text = f"{ref['mean']:.2f}" + ("" if ref["count"] == 1 else f" ± {ref['std']:.2f}")
            tex_text = text.replace("±", "$\\pm$")
            if ref["count"] != 2:
                text, tex_text = f"{text} (n=1)", f"{tex_text} (n=1)"
            if method in best_methods(want, epochs, fraction):
                text, tex_text = f"**{text}**", f"\\textbf{{{tex_text}}}"
            line = next(x for x in body.splitlines() if x.startswith(f"| {method} |"))
            assert text in line and tex_text in tex
            if method == "random":
                continue
            delta, low, high, kind = expected_delta(results_dir, epochs, method, fraction)
            cell = f"{delta:+.2f}" + ("" if np.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")
            mark = "†" if kind == "welch" else ""
            assert f"{cell}{mark} |" in deltas or f"{cell}{mark}\n" in deltas
            assert cell + ("$^\\dagger$" if mark else "") in tex
    first, second = sections
    assert "Score epoch: el2n 1." in first and "† Welch t where the seeds differ" in first
    assert "Score epoch" not in second and "paired t interval over matching seeds." in second
    assert "\\toprule" in tex and "\\bottomrule" in tex and "input\\_norm" in tex
    assert "Protocol: 2 epochs, iterations budget" in tex


def test_later_duplicate_of_a_cell_wins_and_is_reported(results_copy, capsys):
    path = next(results_copy.glob("digits_mlp_random_f0.3_s0_*.json"))
    record = json.loads(path.read_text())
    later = datetime.fromisoformat(record["finished_at"]) + timedelta(days=1)
    newer = {
        **record,
        "finished_at": later.isoformat(),
        "metrics": {**record["metrics"], "test_acc": 0.123},
    }
    older = {**record, "finished_at": "2000-01-01T00:00:00.000+00:00", "metrics": {"test_acc": 1.0}}
    (results_copy / "rerun").mkdir()
    (results_copy / "rerun" / "newer.json").write_text(json.dumps(newer))
    (results_copy / "rerun" / "older.json").write_text(json.dumps(older))
    table = leaderboard_csv(capsys, results_copy)
    _, _, err = run_main(capsys, "leaderboard", results_copy)
    assert (
        f"resolved 2 duplicate run(s) of 1 cell/seed(s) (same run_key: {record['run_key']})" in err
    )
    epochs = record["config"]["train"]["epochs"]
    other = per_seed(results_copy, epochs, "random", 0.3)[1]
    cell = table[(table.epochs == epochs) & (table.method == "random") & (table.fraction == 0.3)]
    assert cell["mean"].item() == pytest.approx((12.3 + other) / 2)


def test_unfinished_runs_are_skipped_and_counted(results_dir, results_copy, capsys):
    path = next(results_copy.glob("digits_mlp_input_norm_f0.5_s1_*.json"))
    record = json.loads(path.read_text())
    diverged = {**record, "run_key": "0" * 16, "status": "diverged", "metrics": {"test_acc": 0.0}}
    (results_copy / "diverged.json").write_text(json.dumps(diverged))
    code, out, err = run_main(capsys, "leaderboard", results_copy, "--format", "csv")
    assert code == 0 and "skipped 1 run(s) that did not finish (diverged 1)" in err
    unchanged = leaderboard_csv(capsys, results_dir)
    pd.testing.assert_frame_equal(pd.read_csv(StringIO(out)), unchanged)


def test_finished_runs_without_usable_metrics_are_named_in_the_notes(results_copy, capsys):
    """A NaN or missing test_acc would otherwise only shrink its cell's n."""
    path = next(results_copy.glob("digits_mlp_random_f0.5_s1_*.json"))
    record = json.loads(path.read_text())
    record.pop("record_path")  # so that each copy is named by its own file
    baseline = leaderboard_csv(capsys, results_copy)
    nan = {**record, "metrics": {**record["metrics"], "test_acc": float("nan")}}
    missing = {key: value for key, value in record.items() if key != "metrics"}
    (results_copy / "nan.json").write_text(json.dumps({**nan, "run_key": "1" * 16}))
    (results_copy / "missing.json").write_text(json.dumps({**missing, "run_key": "2" * 16}))
    code, out, err = run_main(capsys, "leaderboard", results_copy, "--format", "csv")
    assert code == 0
    assert (
        "skipped 2 finished run(s) without a usable test_acc (missing or NaN): "
        "random f=0.5 seed 1 (missing.json), random f=0.5 seed 1 (nan.json)"
    ) in err
    pd.testing.assert_frame_equal(pd.read_csv(StringIO(out)), baseline)


def test_protocols_never_mix(results_copy, capsys):
    for path in results_copy.glob("*.json"):
        if json.loads(path.read_text())["config"]["train"]["epochs"] == 2:
            path.unlink()
    table = leaderboard_csv(capsys, results_copy)
    assert set(table.epochs) == {1} and table.protocol_note.isna().all()
    want = expected(results_copy)
    for row in table.itertuples():
        assert row.mean == pytest.approx(want.loc[(1, row.method, row.fraction), "mean"])


def test_a_row_that_removed_less_than_its_column_says_is_flagged(results_copy, capsys):
    for path in results_copy.glob("digits_mlp_random_f*.json"):
        record = json.loads(path.read_text())
        nominal = record["cell"]["fraction"]
        record["cell"]["method"] = record["cell"]["method_name"] = "infobatch"
        record["selection"]["fraction_removed"] = nominal / 2
        record["run_key"] = record["run_key"][::-1]
        (results_copy / f"dynamic_{path.name}").write_text(json.dumps(record))
    code, out, err = run_main(capsys, "leaderboard", results_copy)
    assert code == 0, err
    assert "infobatch actually removed 15.0% at 30%, 25.0% at 50%" in out
    assert "random actually removed" not in out
    table = leaderboard_csv(capsys, results_copy)
    dynamic = table[(table.method == "infobatch") & (table.fraction == 0.3)]
    assert (dynamic.removed_actual == 0.15).all()


def test_variants_of_one_label_get_their_own_rows(results_copy, capsys):
    for path in results_copy.glob("digits_mlp_random_f*.json"):
        record = json.loads(path.read_text())
        record["config"]["prune"]["balance"] = True
        record["cell"]["balance"] = True
        record["run_key"] = record["run_key"][::-1]
        (results_copy / f"balanced_{path.name}").write_text(json.dumps(record))
    table = leaderboard_csv(capsys, results_copy)
    names = set(table.method)
    assert {"random (prune.balance=False)", "random (prune.balance=True)"} <= names
    assert set(table.loc[table.method == "input_norm", "baseline"]) == {
        "random (prune.balance=False)"
    }


def test_welch_and_paired_intervals_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 2, 5), rng.normal(68, 4, 7)
    welch = difference(dict(enumerate(a)), {s + 10: v for s, v in enumerate(b)})
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch.kind == "welch" and (welch.low, welch.high) == pytest.approx((ci.low, ci.high))
    paired = difference(dict(enumerate(a)), dict(enumerate(b[:5])))
    ci = stats.ttest_rel(a, b[:5]).confidence_interval(0.95)
    assert paired.kind == "paired" and (paired.low, paired.high) == pytest.approx((ci.low, ci.high))
    one = difference({0: 1.0}, {0: 0.5})
    assert one.delta == 0.5 and np.isnan(one.low)


def test_plot_writes_png_and_pdf(results_dir, tmp_path, capsys):
    code, _, err = run_main(capsys, "plot", results_dir, "--out", tmp_path / "fig" / "acc")
    assert code == 0, err
    png, pdf = tmp_path / "fig" / "acc.png", tmp_path / "fig" / "acc.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_forty_methods_get_forty_distinct_line_styles():
    styles = {tuple(sorted(line_style(i).items())) for i in range(40)}
    assert len(styles) == 40


def test_collect_reads_wandb_runs_like_local_records(results_dir, monkeypatch):
    import wandb

    local = collect(str(results_dir))
    fake_runs = [
        SimpleNamespace(
            config=flatten({**r["config"], "cell": r["cell"], "run_key": r["run_key"]}),
            summary_metrics=json.loads(json.dumps(run_summary(r))),
            group="sweep-1" if r["cell"]["seed"] == 0 else "sweep-2",
            tags=cell_tags(r["cell"]),
            path=["me", "prunebench", r["run_key"]],
        )
        for r in raw_records(results_dir)
    ]
    calls = []

    class FakeApi:
        def runs(self, path, filters, lazy):
            calls.append((path, filters))
            return fake_runs

    monkeypatch.setattr(wandb, "Api", FakeApi)
    remote = collect("wandb:me/prunebench", group="sweep-1", tags=["model=mlp"])
    assert calls[0][1]["group"] == "sweep-1"
    mine = local.runs[local.runs.seed == 0].sort_values("run_key").reset_index(drop=True)
    theirs = remote.runs.sort_values("run_key").reset_index(drop=True)
    columns = [c for c in mine.columns if c != "record_path"]  # every field the tables read
    pd.testing.assert_frame_equal(mine[columns], theirs[columns])


def write_export(path: Path, method: str, runs: np.ndarray, labels, flipped, true, fingerprint="f"):
    frame = pd.DataFrame(
        {"index": np.arange(runs.shape[1]), "label": labels, "score": runs.mean(0)}
    )
    for k, run in enumerate(runs):
        frame[f"run_{k}"] = run
    frame.to_csv(path, index=False)
    noise = {"flipped": list(map(int, flipped)), "true_labels": list(map(int, true))}
    meta = {"method": method, "data": {"fingerprint": fingerprint, "label_noise": noise}}
    Path(f"{path}.json").write_text(json.dumps(meta))


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    n = 300
    true = rng.integers(0, 10, n)
    flipped = np.sort(rng.choice(n, 30, replace=False))
    labels = true.copy()
    labels[flipped] = (labels[flipped] + 1) % 10
    hard = np.zeros(n)
    hard[flipped] = 1.0
    a = np.round(rng.normal(size=(3, n)) + hard, 1)  # rounded: ties, as real scores have
    b = np.round(rng.normal(size=(2, n)) + 0.5 * a[0], 1)
    pa, pb = tmp_path / "el2n.csv", tmp_path / "forgetting.csv"
    write_export(pa, "el2n", a, labels, flipped, true[flipped])
    write_export(pb, "forgetting", b, labels, flipped, true[flipped])
    positive = np.zeros(n, dtype=bool)
    positive[flipped] = True
    return pa, pb, a, b, positive


def test_scores_spearman_and_auroc_match_scipy_and_sklearn(exports, capsys):
    pa, pb, a, b, positive = exports
    code, out, err = run_main(capsys, "scores", pa, pb, "--format", "csv")
    assert code == 0, err
    got = pd.read_csv(StringIO(out))
    between = got[got.kind == "spearman_methods"]["value"].item()
    assert between == pytest.approx(stats.spearmanr(a.mean(0), b.mean(0)).statistic)
    runs = got[(got.kind == "spearman_runs") & (got.method == "el2n")].set_index(["a", "b"])
    matrix = stats.spearmanr(a.T).statistic
    assert runs.loc[("run_0", "run_2"), "value"] == pytest.approx(matrix[0, 2])
    assert len(runs) == 3
    auroc = got[got.kind == "auroc"].set_index("method")["value"]
    assert auroc["el2n"] == pytest.approx(roc_auc_score(positive, a.mean(0)))
    assert auroc["forgetting"] == pytest.approx(roc_auc_score(positive, b.mean(0)))
    code, md, _ = run_main(capsys, "scores", pa, pb)
    assert "Label-noise detection" in md and f"{auroc['el2n']:.3f}" in md


def test_scores_refuse_exports_of_different_data(exports, tmp_path, capsys):
    pa, _, a, _, _ = exports
    other = tmp_path / "other.csv"
    write_export(other, "grand", a, np.zeros(a.shape[1], int), [], [], fingerprint="g")
    code, _, err = run_main(capsys, "scores", pa, other)
    assert code == 2 and "score different data sets (fingerprint g vs f)" in err
    rows = tmp_path / "rows.csv"
    write_export(rows, "grand", a[:, :-1], np.zeros(a.shape[1] - 1, int), [], [])
    code, _, err = run_main(capsys, "scores", pa, rows)
    assert code == 2 and "score different training examples (299 vs 300 rows)" in err
    code, _, err = run_main(capsys, "scores", tmp_path / "missing.csv")
    assert code == 2 and "missing.csv' does not exist" in err


def test_bad_sources_and_options_give_one_line_errors(results_dir, tmp_path, capsys):
    code, _, err = run_main(capsys, "leaderboard", tmp_path / "nope")
    assert (
        code == 2
        and err.strip()
        == f"analysis: error: results directory '{tmp_path / 'nope'}' does not exist"
    )
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(capsys, "leaderboard", tmp_path / "empty")
    assert code == 2 and "no result records (JSON files with schema 1)" in err
    record = raw_records(results_dir)[0]
    (tmp_path / "diverged").mkdir()
    (tmp_path / "diverged" / "r.json").write_text(json.dumps({**record, "status": "diverged"}))
    code, _, err = run_main(capsys, "leaderboard", tmp_path / "diverged")
    assert code == 2 and "none of the 1 run(s) in" in err and "finished (diverged 1)" in err
    code, _, err = run_main(capsys, "leaderboard", results_dir, "--data", "cifar10")
    assert code == 2 and "--data cifar10: no finished runs; the runs have digits" in err
    code, _, err = run_main(capsys, "leaderboard", results_dir, "--metric", "val_acc")
    assert err == (
        "analysis: error: no finished run has the metric 'val_acc' "
        "(validation metrics need data.val_size > 0)\n"
    )
    code, _, err = run_main(capsys, "collect", results_dir, "--group", "x")
    assert code == 2 and "wandb:ENTITY/PROJECT" in err


def test_collect_cli_writes_every_run(results_dir, tmp_path, capsys):
    code, _, _ = run_main(capsys, "collect", results_dir, "--out", tmp_path / "runs.csv")
    assert code == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == N_RECORDS and set(runs.method) == {*METHODS, "el2n"}


def test_classes_gives_each_cells_mean_kept_count_per_class_over_seeds(results_dir, capsys):
    code, out, err = run_main(capsys, "classes", results_dir, "--digits", "2")
    assert code == 0, err
    shown = Counter()
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3 and cells[1].endswith("%"):
            counts = tuple(float(c) for c in cells[3:-3])
            assert float(cells[-3]) == min(counts) and float(cells[-2]) == max(counts)
            shown[(cells[0], float(cells[1][:-1]) / 100, int(cells[2]), counts)] += 1
    want = Counter()
    by_cell: dict[tuple, list] = {}
    for r in raw_records(results_dir):
        if r["cell"]["method"] != "full":
            key = (r["config"]["train"]["epochs"], r["cell"]["method"], r["cell"]["fraction"])
            by_cell.setdefault(key, []).append(r["selection"]["kept_per_class"])
    for (_, method, fraction), counts in by_cell.items():
        mean = tuple(round(float(v), 2) for v in np.mean(counts, axis=0))
        want[(method, fraction, len(counts), mean)] += 1
    assert shown == want
