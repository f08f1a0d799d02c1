"""Kept-subset sidecars and original-order exports, checked against independent recomputation.

One el2n export on a digits subset (data.max_train + data.val_size) serves every test:
the sidecar of each run must be exactly what `methods.core.select` keeps from the exported
scores, mapped through the export's own index column.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_run import run_cli

from analysis.__main__ import main as analysis_main
from benchmarks.data import load_dataset
from benchmarks.seeding import derive_seed
from benchmarks.subsets import file_sha256, read_subset, record_subset
from methods.core.select import PruneSpec, kept_count, select

SUBSET = ["data.max_train=400", "data.val_size=50", "data.subset_seed=3"]
FAST = ["score.runs=1", "score.epoch=1", "train.epochs=1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("subsets")
    proc = run_cli(tmp, "method=el2n", *SUBSET, *FAST, f"out={tmp}/el2n.csv", script="score.py")
    assert proc.returncode == 0, proc.stderr
    return tmp


def run_records(tmp: Path) -> list[tuple[Path, dict]]:
    files = sorted((tmp / "results").glob("*.json"))
    return [(f, json.loads(f.read_text())) for f in files]


def test_export_index_is_the_original_training_index(work):
    export = pd.read_csv(work / "el2n.csv")
    full = load_dataset({"name": "digits"}).train_y.numpy()
    assert len(export) == 350 and export["index"].is_monotonic_increasing
    assert export["index"].max() > 400  # not positions in the 400-example subset
    np.testing.assert_array_equal(export["label"].to_numpy(), full[export["index"].to_numpy()])


@pytest.mark.parametrize(
    "prune",
    [
        ["prune.keep=hard,easy", "prune.balance=false,true"],
        ["prune.offset=40", "prune.fraction=0.3"],
        # cut by the exported score itself (the default cut is CCS's own AUM, not exported)
        ["prune.strategy=ccs", "prune.ccs.beta=0.1", "prune.ccs.bins=5", "prune.ccs.cut_by=score"],
    ],
)
def test_sidecar_is_what_select_keeps_from_the_export(work, tmp_path, prune):
    cache = f"cache.dir={work}/cache"  # the export's scores, not computed again
    proc = run_cli(tmp_path, "-m", "method=el2n", *prune, *SUBSET, *FAST, "seed=1", cache)
    assert proc.returncode == 0, proc.stderr
    export = pd.read_csv(work / "el2n.csv")
    found = run_records(tmp_path)
    assert found
    for record_file, rec in found:
        p = rec["config"]["prune"]
        spec = PruneSpec(
            fraction=p["fraction"],
            keep=p["keep"],
            balance=p["balance"],
            offset=p["offset"],
            strategy=p["strategy"],
            ccs_beta=p["ccs"]["beta"],
            ccs_bins=p["ccs"]["bins"],
            ccs_cut_by=p["ccs"]["cut_by"],
        )
        positions = select(
            export["score"].to_numpy(), export["label"].to_numpy(), spec, derive_seed(1, "select")
        )
        expected = export["index"].to_numpy()[positions]
        path = record_subset(record_file, rec)
        kept = read_subset(path)
        np.testing.assert_array_equal(kept.indices, expected)
        assert kept.weights is None and kept.counts is None
        assert rec["selection"]["subset"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (
            rec["selection"]["kept_indices_sha256"]
            == hashlib.sha256(expected.astype(np.int64).tobytes()).hexdigest()
        )


def test_dynamic_run_records_presentation_counts(tmp_path):
    proc = run_cli(tmp_path, "method=rs2", "train.epochs=3", "train.budget=epochs", *SUBSET)
    assert proc.returncode == 0, proc.stderr
    ((record_file, rec),) = run_records(tmp_path)
    sub = read_subset(record_subset(record_file, rec))
    full = load_dataset({"name": "digits"}).train_y.numpy()
    assert sub.indices.size == 350 and np.all(np.diff(sub.indices) > 0)
    assert np.bincount(full[sub.indices], minlength=10).sum() == 350
    # RS2, 3 passes of 175 of 350 without replacement: each example once, then 175 twice
    assert kept_count(350, 0.5) == 175
    assert np.bincount(sub.counts).tolist() == [0, 175, 175]
    assert rec["selection"]["subset"]["sha256"] == file_sha256(record_subset(record_file, rec))


def test_analysis_exports_subsets_and_their_overlap(work, tmp_path, capsys):
    cache = f"cache.dir={work}/cache"
    proc = run_cli(tmp_path, "-m", "method=random,el2n", "seed=0,1", *SUBSET, *FAST, cache)
    assert proc.returncode == 0, proc.stderr
    kept = {}
    for record_file, rec in run_records(tmp_path):
        indices = read_subset(record_subset(record_file, rec)).indices
        kept[(rec["cell"]["method"], rec["cell"]["seed"])] = set(indices.tolist())
    assert (
        analysis_main(["subsets", str(tmp_path / "results"), "--out", str(tmp_path / "kept")]) == 0
    )
    listing = pd.read_csv(tmp_path / "kept" / "subsets.csv")
    assert len(listing) == 4
    for _, row in listing.iterrows():
        expected = sorted(kept[(row["method"], row["seed"])])
        assert np.load(tmp_path / "kept" / f"{row['file']}.npy").tolist() == expected
        assert pd.read_csv(tmp_path / "kept" / f"{row['file']}.csv")["index"].tolist() == expected

    def jac(a, b):
        return len(a & b) / len(a | b)

    capsys.readouterr()
    assert analysis_main(["overlap", str(tmp_path / "results"), "--digits", "6"]) == 0
    table = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:4]
        for line in table.splitlines()
        if "| el2n |" in line or "| random |" in line
    }
    between = np.mean([jac(kept[("el2n", s)], kept[("random", s)]) for s in (0, 1)])
    assert float(rows["el2n"][1]) == pytest.approx(between, abs=1e-6)
    assert float(rows["el2n"][0]) == 1.0  # el2n's scores do not depend on the run seed
    assert float(rows["random"][1]) == pytest.approx(
        jac(kept[("random", 0)], kept[("random", 1)]), abs=1e-6
    )
    # a sidecar that no longer matches its record is refused
    victim = next((tmp_path / "results").glob("*random*_s0_*.kept.npz"))
    np.savez_compressed(victim, indices=np.arange(3))
    assert analysis_main(["overlap", str(tmp_path / "results")]) == 2
    assert "does not match the sha256 in its record" in capsys.readouterr().err
