"""method=precomputed: scores from a file select exactly what the method itself selects.

The reference is the el2n run's own kept-index hash: an export of el2n's scores, read
back in every format (and shuffled, and as a bare array from "another codebase"), must
keep the very same examples. Bad files are each one line, before anything is recorded.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import synthetic_ctx
from test_run import run_cli

from benchmarks.errors import ConfigError
from methods import get_method

SUBSET = ["data.max_train=400", "data.val_size=50"]
FAST = ["score.runs=1", "score.epoch=1", "train.epochs=1"]
N_DIGITS = 1437


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precomputed")
    outs = f"out={tmp}/el2n.csv,{tmp}/el2n.npy"
    proc = run_cli(tmp, "-m", "method=el2n", *SUBSET, *FAST, outs, script="score.py")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(tmp, "method=el2n", *SUBSET, *FAST)
    assert proc.returncode == 0, proc.stderr
    export = pd.read_csv(tmp / "el2n.csv")
    export[["index", "score"]].sample(frac=1.0, random_state=0).to_csv(
        tmp / "shuffled.csv", index=False
    )
    full = np.full(N_DIGITS, 7.0)  # examples outside the run's subset get any score
    full[export["index"].to_numpy()] = export["score"].to_numpy()
    np.save(tmp / "plain.npy", full)
    torch.save(torch.from_numpy(full), tmp / "plain.pt")
    return tmp


def hashes(results):
    out = {}
    for path in results.glob("*.json"):
        rec = json.loads(path.read_text())
        out[rec["config"]["method"].get("path")] = rec["selection"]["kept_indices_sha256"]
    return out


def test_every_file_form_keeps_what_el2n_kept(work, tmp_path):
    files = ["el2n.csv", "el2n.npy", "shuffled.csv", "plain.npy", "plain.pt"]
    paths = ",".join(str(work / f) for f in files)
    cache = f"cache.dir={work}/cache"
    proc = run_cli(
        tmp_path, "-m", "method=precomputed", f"method.path={paths}", *SUBSET, *FAST, cache
    )
    assert proc.returncode == 0, proc.stderr
    (reference,) = hashes(work / "results").values()
    got = hashes(tmp_path / "results")
    assert got == {str(work / f): reference for f in files}


def write_bad_files(work, bad):
    export = pd.read_csv(work / "el2n.csv")
    sidecar = json.loads((work / "el2n.csv.json").read_text())
    np.save(bad / "short.npy", np.zeros(N_DIGITS - 1))
    nan = np.zeros(N_DIGITS)
    nan[5] = np.nan
    np.save(bad / "nan.npy", nan)
    dup = export.copy()
    dup.loc[3, "index"] = dup.loc[4, "index"]
    dup.to_csv(bad / "dup.csv", index=False)
    export.drop(index=10).to_csv(bad / "missing.csv", index=False)
    shutil.copy(work / "el2n.csv", bad / "other_data.csv")
    sidecar["data"]["source_fingerprint"] = "0" * 64
    (bad / "other_data.csv.json").write_text(json.dumps(sidecar))
    relabelled = export.copy()
    relabelled.loc[0, "label"] = (relabelled.loc[0, "label"] + 1) % 10
    relabelled.to_csv(bad / "relabelled.csv", index=False)
    sidecar = json.loads((work / "el2n.csv.json").read_text())
    (bad / "relabelled.csv.json").write_text(json.dumps(sidecar))
    return {
        "short.npy": f"{N_DIGITS - 1} scores but the data set has {N_DIGITS} training examples",
        "nan.npy": "1 scores are NaN or infinite (first at index 5)",
        "dup.csv": f"1 indices appear more than once (first: {export.loc[4, 'index']})",
        "missing.csv": (
            f"no score for 1 of the run's 350 training examples "
            f"(first: original index {export.loc[10, 'index']})"
        ),
        "other_data.csv": "scores of another data set (fingerprint 000000000000...",
        "relabelled.csv": "1 of the run's labels differ from those the scores were computed with",
    }


def test_each_bad_file_is_one_line_and_no_record(work, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    expected = write_bad_files(work, bad)
    paths = ",".join(str(bad / f) for f in expected)
    proc = run_cli(tmp_path, "-m", "method=precomputed", f"method.path={paths}", *SUBSET, *FAST)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("prunebench: error")]
    assert len(errors) == len(expected), proc.stderr
    for (name, message), line in zip(expected.items(), errors, strict=True):
        assert f"method.path={bad / name}: {message}" in line
    assert "Traceback" not in proc.stderr
    assert not [*(tmp_path / "results").glob("*.json"), *(tmp_path / "results").glob("*.npz")]


def test_direction_low_reverses_the_scores_and_options_are_checked(tmp_path):
    ctx = synthetic_ctx()
    scores = np.linspace(0.0, 1.0, ctx.n)
    np.save(tmp_path / "s.npy", scores)
    high = get_method("precomputed", {"path": str(tmp_path / "s.npy")})
    low = get_method("precomputed", {"path": str(tmp_path / "s.npy"), "direction": "low"})
    np.testing.assert_array_equal(high.score(ctx), scores)
    np.testing.assert_array_equal(low.score(ctx), -scores)
    with pytest.raises(ConfigError, match="method.direction='up' is not one of high, low"):
        get_method("precomputed", {"path": str(tmp_path / "s.npy"), "direction": "up"})
    with pytest.raises(ConfigError, match="needs method.path=FILE"):
        get_method("precomputed", {})
    with pytest.raises(ConfigError, match="no such file"):
        get_method("precomputed", {"path": str(tmp_path / "none.npy")})
