"""Scores on real digits: label-noise detection, and what keep=hard keeps for every method."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from patience import HUNG_AFTER_S
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from benchmarks.pipeline import prepare
from benchmarks.seeding import derive_seed
from methods import get_method
from methods.core.dynamics import Proxy, train_proxy
from methods.core.select import PruneSpec, select

ROOT = Path(__file__).resolve().parent.parent


def _prepared(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["cache.scores=false", *overrides])
    return prepare(cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def noisy():
    """Digits with 10% of the training labels flipped (144 examples), and the flip mask."""
    prep = _prepared("data.label_noise=0.1")
    mask = np.zeros(prep.ctx.n, dtype=bool)
    mask[prep.flipped] = True
    assert mask.sum() == 144
    assert np.all(prep.ctx.labels[mask] != prep.ds.train_y.numpy()[mask])
    return prep, mask


def test_el2n_finds_flipped_labels(noisy):
    prep, mask = noisy
    scores = get_method("el2n", {"epoch": 3, "runs": 2}).score(prep.ctx)
    assert roc_auc_score(mask, scores) > 0.9
    kept = select(scores, prep.ctx.labels, PruneSpec(fraction=0.9), seed=0)
    assert mask[kept].mean() > 0.8  # keep=hard keeps the hardest: mostly the flipped ones


def test_forgetting_finds_flipped_labels_when_the_proxy_does_not_memorise_them(noisy):
    # a 10-epoch proxy: the 30-epoch one memorises every flipped digit, and
    # forgetting's AUROC then drops to about 0.74 (measured), as expected of the score
    prep, mask = noisy
    scores = get_method("forgetting", {"proxy": {"epochs": 10}}).score(prep.ctx)
    assert roc_auc_score(mask, scores) > 0.9


def test_aum_ranks_flipped_labels_as_hard(noisy):
    prep, mask = noisy
    scores = get_method("aum", {"proxy": {"epochs": 10}}).score(prep.ctx)
    assert roc_auc_score(mask, scores) > 0.9


@pytest.mark.parametrize(
    ("name", "uncertainty"),
    [
        ("entropy", lambda p: -(p * np.log(p)).sum(1)),
        ("margin", lambda p: -(np.sort(p, 1)[:, -1] - np.sort(p, 1)[:, -2])),
        ("least_confidence", lambda p: -p.max(1)),
    ],
)
def test_uncertainty_keep_hard_keeps_the_most_uncertain(name, uncertainty):
    prep = _prepared("train.epochs=4")
    scores = get_method(name, {"epoch": 2}).score(prep.ctx)
    model = train_proxy(prep.ctx, Proxy(), 0, stop_epoch=2)
    with torch.no_grad():
        probs = model(prep.ctx.train_x).double().softmax(1).numpy()
    kept = select(scores, prep.ctx.labels, PruneSpec(fraction=0.8), seed=0)
    most_uncertain = np.argsort(-uncertainty(probs), kind="stable")[: kept.size]
    assert len(set(kept) & set(most_uncertain)) >= 0.98 * kept.size


def test_input_norm_keep_hard_keeps_the_largest_normalised_images():
    prep = _prepared()
    scores = get_method("input_norm").score(prep.ctx)
    x = prep.ctx.train_x.double().numpy() / 255.0
    mean, std = (
        np.array(prep.ds.mean)[None, :, None, None],
        np.array(prep.ds.std)[None, :, None, None],
    )
    norms = np.sqrt((((x - mean) / std) ** 2).reshape(len(x), -1).sum(1))
    assert scores == pytest.approx(norms)
    kept = select(scores, prep.ctx.labels, PruneSpec(fraction=0.5), seed=0)
    assert set(kept) == set(np.argsort(-norms)[: kept.size])


def test_random_and_full_keep_what_they_say():
    prep = _prepared()
    labels = prep.ctx.labels
    scores = get_method("random").score(prep.ctx)
    hard = select(scores, labels, PruneSpec(fraction=0.5), seed=0)
    easy = select(scores, labels, PruneSpec(fraction=0.5, keep="easy"), seed=0)
    assert not set(hard) & set(easy)  # two disjoint uniform halves
    assert abs(labels[hard].mean() - labels.mean()) < 0.3
    assert get_method("full").prunes is False


def test_score_export_is_in_original_order_with_fingerprint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRUNEBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "norms.csv"
    args = [
        sys.executable,
        str(ROOT / "score.py"),
        "method=input_norm",
        f"out={out}",
        "data.val_size=100",
        f"hydra.run.dir={tmp_path}/h",
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S)
    assert proc.returncode == 0, proc.stderr
    rows = np.genfromtxt(out, delimiter=",", names=True)
    meta = json.loads(out.with_name("norms.csv.json").read_text())
    assert meta["data"]["fingerprint"] and meta["method"] == "input_norm"
    assert list(rows.dtype.names) == ["index", "label", "score", "run_0"]
    assert rows.size == 1437 - 100 and np.all(np.diff(rows["index"]) > 0)
    # independent reference: sklearn's raw digits, split as documented (360 test, seed 0)
    raw = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    prep = _prepared()
    x = raw[np.isin(np.arange(len(raw)), _digits_train_positions(prep))] / 255.0
    z = (x - prep.ds.mean[0]) / prep.ds.std[0]
    norms = np.sqrt((z**2).reshape(len(z), -1).sum(1))
    assert rows["score"] == pytest.approx(norms[rows["index"].astype(int)])


def _digits_train_positions(prep):
    """Positions in sklearn's order of the digits training images (matched by pixels)."""
    raw = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    train = prep.ds.train_x.numpy().reshape(len(prep.ds.train_x), -1)
    lookup = {row.tobytes(): i for i, row in enumerate(raw)}
    positions = np.array([lookup[row.tobytes()] for row in train])
    assert np.all(np.diff(positions) > 0)  # the training set keeps sklearn's order
    return positions


def test_proxy_runs_use_independent_seeds():
    assert len({Proxy(seed=0).run_seed(k) for k in range(10)}) == 10
    assert Proxy(seed=0).run_seed(0) != Proxy(seed=1).run_seed(0)
    assert derive_seed(0, "init") != derive_seed(0, "order")
