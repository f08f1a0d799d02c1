"""method=subset: train on exactly the examples a file names."""

import json

import numpy as np
import pandas as pd
import pytest
from tiny_cell import run_tiny_cell

from benchmarks.errors import ConfigError
from benchmarks.results import indices_hash
from benchmarks.subsets import read_subset


def _sidecar(tmp_path, record):
    return tmp_path / "results" / record["selection"]["subset"]["file"]


def test_another_runs_sidecar_reproduces_its_kept_set_and_accuracy_bitwise(tmp_path):
    source = run_tiny_cell(tmp_path, "method=el2n", "prune.fraction=0.3")
    again = run_tiny_cell(tmp_path, "method=subset", f"method.path={_sidecar(tmp_path, source)}")
    assert again["cell"]["method"] == "subset:el2n-s0"
    assert again["cell"]["fraction"] == pytest.approx(0.3)
    assert again["selection"]["kept_indices_sha256"] == source["selection"]["kept_indices_sha256"]
    assert again["metrics"]["test_acc"] == source["metrics"]["test_acc"]
    assert again["metrics"]["test_loss"] == source["metrics"]["test_loss"]
    # what choosing the subset cost comes with it
    assert again["compute"]["score"] == source["compute"]["score"]


def test_a_csv_keeps_exactly_its_examples_and_its_weights(tmp_path):
    # 50 of the run's 200 training examples (data.max_train draws them; a full run lists them)
    probe = run_tiny_cell(tmp_path, "method=full")
    everyone = read_subset(_sidecar(tmp_path, probe)).indices
    chosen = np.random.default_rng(0).choice(everyone, size=50, replace=False)
    table = pd.DataFrame({"index": chosen[::-1], "weight": np.linspace(0.5, 2.0, chosen.size)})
    table.to_csv(tmp_path / "mine.csv", index=False)
    record = run_tiny_cell(tmp_path, "method=subset", f"method.path={tmp_path / 'mine.csv'}")
    assert record["cell"]["method"] == "subset:mine"
    assert record["cell"]["fraction"] == pytest.approx(1 - 50 / 200)
    assert record["selection"]["kept_indices_sha256"] == indices_hash(np.sort(chosen))
    kept = read_subset(_sidecar(tmp_path, record))
    assert np.array_equal(kept.indices, np.sort(chosen))
    by_index = dict(zip(table["index"], table["weight"], strict=True))
    assert np.array_equal(kept.weights, [by_index[i] for i in kept.indices])


def test_an_npy_from_the_whole_data_set_runs_and_is_labelled(tmp_path):
    np.save(tmp_path / "firsts.npy", np.arange(0, 1437, 2))
    record = run_tiny_cell(
        tmp_path, "method=subset", f"method.path={tmp_path / 'firsts.npy'}", "data.max_train=null"
    )
    assert record["selection"]["kept"] == 719
    assert record["cell"]["method"] == "subset:firsts"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.array([1, 2, 2]), "appear more than once"),
        (np.array([5, 100000]), "outside the 1437 training examples"),
        (np.array([-1, 3]), "negative index"),
        (np.array([0.5, 1.0]), "must be integers"),
    ],
)
def test_bad_files_are_one_line_and_leave_no_record(tmp_path, content, message):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ConfigError, match=message) as err:
        run_tiny_cell(
            tmp_path, "method=subset", f"method.path={tmp_path / 'bad.npy'}", "data.max_train=null"
        )
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "results").glob("*.json"))


def test_a_subset_of_another_data_set_is_refused(tmp_path):
    np.save(tmp_path / "other.npy", np.arange(10))
    (tmp_path / "other.npy.json").write_text(json.dumps({"data": {"fingerprint": "f" * 64}}))
    with pytest.raises(ConfigError, match="a subset of another data set"):
        run_tiny_cell(tmp_path, "method=subset", f"method.path={tmp_path / 'other.npy'}")
    assert not list((tmp_path / "results").glob("*.json"))


def test_examples_outside_the_runs_training_set_are_named(tmp_path):
    np.save(tmp_path / "all.npy", np.arange(1437))
    with pytest.raises(ConfigError, match="not in this run's training set"):
        run_tiny_cell(tmp_path, "method=subset", f"method.path={tmp_path / 'all.npy'}")


def test_a_changed_sidecar_is_refused(tmp_path):
    source = run_tiny_cell(tmp_path, "method=random", "prune.fraction=0.5")
    sidecar = _sidecar(tmp_path, source)
    kept = read_subset(sidecar)
    np.savez_compressed(sidecar, indices=kept.indices[:-1])
    with pytest.raises(ConfigError, match="changed after the run"):
        run_tiny_cell(tmp_path, "method=subset", f"method.path={sidecar}", "seed=1")
