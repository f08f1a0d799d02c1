"""A cell's compute in example-passes, against a hand count of what the cell has to do."""

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from benchmarks.compute import COUNT, Tally, snapshot
from benchmarks.models import build_model
from benchmarks.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
N, BATCH, EPOCHS, TEST = 120, 32, 3, 360  # digits: 360 test images
TINY = [
    f"data.max_train={N}",
    "model=mlp",
    f"train.epochs={EPOCHS}",
    f"train.batch_size={BATCH}",
    "score.epoch=1",
    "score.runs=2",
    "run.checkpoint_steps=0",
]


def _run(tmp_path, *overrides):
    places = [f"results.dir={tmp_path / 'results'}", f"cache.dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=[*TINY, *places, *overrides]), progress=False)


def _only(passes):
    (counts,) = passes.values()
    return counts["forward"], counts["backward"]


def test_a_tiny_cell_costs_its_hand_count_whatever_the_cache_holds(tmp_path):
    record = _run(tmp_path, "method=el2n", "prune.fraction=0.5")
    # EL2N at epoch 1 of K=2 proxy runs: each trains one pass over the N examples (forward
    # and backward) and its recorder evaluates all N at epochs 0 and 1 (forward only)
    proxy_forward, proxy_backward = 2 * (N + 2 * N), 2 * N
    # the training: the full-data budget of EPOCHS * ceil(N / BATCH) steps on the 60 kept
    # examples, whose passes take ceil(60 / BATCH) = 2 steps each: 6 passes of 60
    kept = N // 2
    steps = EPOCHS * math.ceil(N / BATCH)
    train = steps // math.ceil(kept / BATCH) * kept
    cost = record["compute"]
    assert _only(cost["passes"]["score"]) == (proxy_forward, proxy_backward)
    assert _only(cost["passes"]["train"]) == (train, train)
    assert _only(cost["passes"]["eval"]) == (EPOCHS * TEST, 0)
    score_units = (proxy_forward + 2 * proxy_backward) / 3
    assert cost["score"] == pytest.approx(score_units)
    assert cost["train"] == train
    assert cost["total"] == pytest.approx(score_units + train)
    assert cost["wall_seconds"] > 0
    # the same scores read from the cache by another fraction cost the same passes
    again = _run(tmp_path, "method=el2n", "prune.fraction=0.3")
    assert again["selection"]["score_cost"]["trainings_run"] == 0
    assert _only(again["compute"]["passes"]["score"]) == (proxy_forward, proxy_backward)
    full = _run(tmp_path, "method=full")
    assert full["compute"]["total"] == EPOCHS * N


def test_flops_per_example_of_the_mlp_are_its_matrix_products():
    model = build_model("mlp", 1, 10, (8, 8), (0.5,), (0.25,), {"width": 16})
    # two FLOPs per multiply-add: 64 -> 16 -> 16 -> 10
    assert COUNT.flops[model.network] == 2 * (64 * 16 + 16 * 16 + 16 * 10)
    before = snapshot()
    model(torch.zeros(5, 1, 8, 8)).sum().backward()
    assert (snapshot() - before).passes == {model.network: [5, 5]}


def test_passes_of_a_smaller_network_convert_by_forward_flops():
    tally = Tally(flops={"big": 300, "small": 100})
    tally.add("big", forward=30, backward=30)
    tally.add("small", forward=90, backward=0)
    # big: 30 full passes; small: 90 forwards = 30 of its full passes = 10 of big's
    assert tally.units("big") == pytest.approx(30 + 10)
    with pytest.raises(ValueError, match="no FLOP count"):
        Tally(passes={"x": [1, 1]}).units("y")
