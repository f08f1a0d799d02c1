"""`python -m analysis compare`: our cells from tiny real runs beside a small reference file."""

import math
from dataclasses import replace

import pytest
from hydra import compose, initialize_config_dir
from test_presets import CONF

from analysis.__main__ import main
from analysis.collect import collect
from analysis.compare import REFERENCES, compare, load_reference, render_comparison
from analysis.errors import AnalysisError
from analysis.leaderboard import build_tables
from benchmarks.data import DATASETS
from benchmarks.models import MODELS
from benchmarks.pipeline import run
from methods.core.registry import method_names


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Random at 50% removed (seeds 0, 1) and full data (seed 0) on 300 digits, 1 epoch."""
    root = tmp_path_factory.mktemp("compare")
    accuracies = {}
    for method, fraction, seed in [("random", 0.5, 0), ("random", 0.5, 1), ("full", 0.0, 0)]:
        overrides = [
            f"method={method}",
            f"prune.fraction={fraction}",
            f"seed={seed}",
            "data.max_train=300",
            "train.epochs=1",
            f"results.dir={root / 'results'}",
            f"cache.dir={root / 'cache'}",
            "run.checkpoint_steps=0",
            "device=cpu",
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            record = run(compose("config", overrides=overrides), progress=False)
        accuracies.setdefault(method, []).append(100 * record["metrics"]["test_acc"])
    return root / "results", accuracies


def _reference(tmp_path, rows):
    path = tmp_path / "mine.csv"
    path.write_text("method,data,model,fraction,mean,std,source\n" + "\n".join(rows) + "\n")
    return path


def test_compare_puts_our_cell_beside_theirs_with_the_difference(results, tmp_path):
    root, acc = results
    ours = sum(acc["random"]) / 2
    path = _reference(
        tmp_path,
        [
            f"random,digits,cnn,0.5,{ours - 0.5},1.0,Paper A Table 1",
            f"random,digits,cnn,0.5,{ours + 3},1.0,Paper B Table 2",
            f"full,digits,cnn,0.0,{acc['full'][0]},,Paper A Table 1",
            "random,digits,cnn,0.7,50.0,,Paper A Table 1",
        ],
    )
    tables = build_tables(collect(str(root)).runs)
    found = compare(tables, load_reference(str(path)))
    assert [c.ours is not None for c in found] == [True, True, True, False]
    assert found[0].ours.mean == pytest.approx(ours) and found[0].ours.n == 2
    assert found[0].difference == pytest.approx(0.5) and found[0].within is True
    assert found[1].difference == pytest.approx(-3.0) and found[1].within is False
    assert found[2].difference == pytest.approx(0.0) and found[2].within is None
    assert math.isnan(found[3].difference)
    text = render_comparison(found, "md")
    assert "| random | digits | cnn | 50% |" in text and "| +0.50 | yes |" in text
    assert "no run" in text and "- random, digits, cnn: Paper B Table 2" in text
    latex = render_comparison(found, "latex")
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex and "\\%" in latex


def test_compare_cli_writes_markdown_and_names_a_bad_reference(results, tmp_path, capsys):
    root, _ = results
    path = _reference(tmp_path, ["random,digits,cnn,0.5,90.0,,Paper A"])
    assert main(["compare", str(root), "--reference", str(path)]) == 0
    assert "| random | digits | cnn | 50% |" in capsys.readouterr().out
    assert main(["compare", str(root), "--reference", "no_such_paper"]) == 2
    assert "--reference 'no_such_paper' is neither" in capsys.readouterr().err
    bad = _reference(tmp_path, ["random,digits,cnn,0.5,,,Paper A"])
    with pytest.raises(AnalysisError, match="needs a fraction, a mean and a source"):
        load_reference(str(bad))


@pytest.mark.parametrize("name", sorted(p.stem for p in REFERENCES.glob("*.csv")))
def test_shipped_references_load_and_every_row_cites_its_source(name):
    frame = load_reference(name)
    assert len(frame) and frame["source"].str.len().min() > 10
    assert frame["mean"].between(0, 100).all()
    # rows join our tables by these names: each must be one prunebench registers
    assert set(frame["method"]) <= set(method_names())
    assert all(d in DATASETS for d in frame["data"]) and all(m in MODELS for m in frame["model"])


def test_a_shipped_reference_meets_the_cell_of_its_data_and_model(results):
    """Our tiny table, labelled as CIFAR-100 / ResNet-18, against tdds_cifar100: its full-data
    row (Table 1: 78.21, no std) meets our full cell; its TDDS rows find no run."""
    root, acc = results
    tables = build_tables(collect(str(root)).runs)
    tables = [replace(t, data="cifar100", model="resnet18") for t in tables]
    found = {(c.method, c.fraction): c for c in compare(tables, load_reference("tdds_cifar100"))}
    assert found[("full", 0.0)].difference == pytest.approx(acc["full"][0] - 78.21)
    assert found[("full", 0.0)].within is None
    assert found[("tdds", 0.9)].ours is None and found[("tdds", 0.9)].their_std == 0.22
