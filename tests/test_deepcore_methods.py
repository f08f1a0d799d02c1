"""DeepCore-parity and dynamics methods against hand-computed and brute-force references."""

import copy
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.special import rel_entr
from scipy.stats import beta as beta_distribution
from sklearn.neighbors import NearestNeighbors
from synthetic import synthetic_ctx
from torch import nn

from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from methods import cal, contextual_diversity, deepfool, dual, loss, vog
from methods.cal import cal_scores, nearest_neighbours
from methods.contextual_diversity import contextual_diversity_order
from methods.core.dynamics import Proxy, at_epoch, dynamics, train_proxy
from methods.core.features import proxy_outputs
from methods.core.registry import get_method
from methods.core.select import PruneSpec, class_quotas, kept_count
from methods.deepfool import deepfool_norms
from methods.dual import beta_probabilities, dual_scores

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
MODULES = (loss, dual, cal, contextual_diversity, deepfool, vog)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One score cache for the module, so that each proxy training runs once."""
    return tmp_path_factory.mktemp("deepcore-cache")


def _ctx(cache_dir=None, n=64):
    return synthetic_ctx(cache_dir, n=n)


def _kept(method, ctx, fraction=0.5, **spec):
    scores = method.score(ctx)
    return method.select_subset(ctx, scores, PruneSpec(fraction=fraction, **spec), seed=0)


def test_loss_keeps_the_highest_cross_entropy_of_the_proxy_at_epoch_t(cache_dir):
    ctx = _ctx(cache_dir)
    p_true = at_epoch(dynamics(ctx, Proxy(), 0, 2), "p_true", 2)
    by_hand = np.array([-np.log(p) for p in p_true])
    method = get_method("loss", {"epoch": 2, "runs": 1})
    np.testing.assert_allclose(method.score(ctx), by_hand, rtol=1e-12)
    kept = _kept(method, ctx, fraction=0.75)
    assert set(kept.tolist()) == set(np.argsort(-by_hand, kind="stable")[:16].tolist())


def _official_dual(preds, window_size):
    """The official `dual` function restated: torch std (unbiased) * 10 * (1 - mean)."""
    preds = torch.as_tensor(preds)
    windows = []
    for i in range(preds.size(0) - window_size + 1):
        window = preds[i : i + window_size, :]
        windows.append(window.std(dim=0) * 10 * (1 - window.mean(dim=0)))
    return torch.stack(windows).mean(dim=0).numpy()


def test_dual_equals_the_official_formula_without_its_constant_10():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(size=(7, 20))
    np.testing.assert_allclose(dual_scores(p_true, 3) * 10, _official_dual(p_true, 3), rtol=1e-12)


def test_dual_method_reads_the_true_class_probability_after_epochs_1_to_t(cache_dir):
    ctx = _ctx(cache_dir)
    d = dynamics(ctx, Proxy(), 0, 4)
    p_true = np.stack([at_epoch(d, "p_true", e) for e in range(1, 5)])
    method = get_method("dual", {"horizon": 4, "window": 3})
    np.testing.assert_allclose(method.score(ctx), _official_dual(p_true, 3) / 10, rtol=1e-6)
    uncertain = _kept(method, ctx, fraction=0.75)
    assert set(uncertain.tolist()) == set(np.argsort(-_official_dual(p_true, 3))[:16].tolist())


def test_dual_defaults_follow_the_proxy_schedule_as_the_official_30_of_200(cache_dir):
    """horizon: 0.15 of a 20-epoch schedule = 3 epochs; window: a third of it, at least 2."""
    ctx = _ctx(cache_dir)
    method = get_method("dual", {"proxy": {"epochs": 20}})
    resolved = method.resolve(ctx)
    assert (resolved.horizon, resolved.window) == (3, 2)
    d = dynamics(ctx, Proxy(epochs=20), 0, 3)
    p_true = np.stack([at_epoch(d, "p_true", e) for e in range(1, 4)])
    np.testing.assert_allclose(method.score(ctx), _official_dual(p_true, 2) / 10, rtol=1e-6)
    with pytest.raises(ConfigError, match="method.window=5 must lie in 2..method.horizon=3"):
        get_method("dual", {"horizon": 3, "window": 5})


def test_beta_probabilities_restate_the_official_beta_sampling():
    rng = np.random.default_rng(1)
    mean_p, scores = rng.uniform(0.05, 0.95, 50), rng.uniform(size=50)
    removed, c_d = 0.7, 4.0
    anchor = mean_p[np.argsort(scores)[-10:]].mean()  # official: mask[-10:], the top scores
    y_b = 15 * (1 - anchor) * (1 - removed**c_d)
    joint = beta_distribution.pdf(mean_p, 16 - y_b, y_b) * scores
    np.testing.assert_allclose(
        beta_probabilities(mean_p, scores, removed, c_d), joint / joint.sum(), rtol=1e-10
    )


def test_dual_beta_sampling_keeps_the_budget_and_moves_to_easier_examples_as_more_is_removed(
    cache_dir,
):
    ctx = _ctx(cache_dir)
    method = get_method("dual", {"horizon": 4, "window": 3, "sampling": "beta"})
    mean_p = np.stack([at_epoch(dynamics(ctx, Proxy(), 0, 4), "p_true", e) for e in (1, 2, 3, 4)])
    mean_p = mean_p.mean(axis=0)
    scores = method.score(ctx)
    light = beta_probabilities(mean_p, scores, 0.1, 4.0)
    heavy = beta_probabilities(mean_p, scores, 0.9, 4.0)
    assert (heavy * mean_p).sum() > (light * mean_p).sum()
    fresh = _ctx(cache_dir)
    kept = _kept(method, fresh, fraction=0.7)
    assert kept.size == kept_count(64, 0.7) and np.unique(kept).size == kept.size
    assert fresh.cost.proxy_trainings == 1  # the sampling re-reads the scores' training
    with pytest.raises(ConfigError, match="sampling=beta draws its own subset"):
        _kept(method, ctx, fraction=0.7, balance=True)


def test_cal_is_the_mean_kl_from_the_brute_force_nearest_neighbours_by_hand():
    rng = np.random.default_rng(2)
    features = torch.from_numpy(rng.normal(size=(12, 3)))
    log_probs = torch.from_numpy(rng.normal(size=(12, 4))).log_softmax(dim=1)
    neighbours = nearest_neighbours(features, 3, chunk=5)
    probs = log_probs.exp().numpy()
    for i in range(12):
        gaps = [np.linalg.norm(features[i] - features[j]) if j != i else np.inf for j in range(12)]
        assert neighbours[i].tolist() == np.argsort(gaps)[:3].tolist()
        kl = [sum(probs[j] * np.log(probs[j] / probs[i])) for j in np.argsort(gaps)[:3]]
        assert cal_scores(log_probs, neighbours)[i].item() == pytest.approx(np.mean(kl))


def test_cal_keeps_the_highest_contrastive_scores_per_class(cache_dir):
    ctx = _ctx(cache_dir)
    method = get_method("cal", {"neighbors": 3})
    out = proxy_outputs(ctx, Proxy(), 0, 4)
    labels, scores = ctx.labels, method.score(ctx)
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        feats = torch.from_numpy(out["features"][members]).double()
        feats = feats / feats.norm(dim=1, keepdim=True)  # the official L2 normalisation
        logp = torch.from_numpy(out["logits"][members]).double().log_softmax(dim=1)
        by_hand = cal_scores(logp, nearest_neighbours(feats, 3)).numpy()
        np.testing.assert_allclose(scores[members], by_hand, rtol=1e-10)
    kept = _kept(method, ctx, fraction=0.5)
    assert set(kept.tolist()) == set(np.argsort(-scores, kind="stable")[:32].tolist())


def _official_cal(features, probs, k):
    """acquisition/cal.py (mourga/contrastive-active-learning) restated: features
    L2-normalised, sklearn's Euclidean k nearest (here among the other rows), and the mean
    over them of KLDivLoss(log p_x, p_neighbour) summed over classes = KL(p_nb || p_x)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    out = []
    for i in range(len(unit)):
        others = np.delete(np.arange(len(unit)), i)
        near = NearestNeighbors(n_neighbors=k).fit(unit[others]).kneighbors(unit[i : i + 1])[1]
        out.append(np.mean([np.sum(rel_entr(probs[j], probs[i])) for j in others[near[0]]]))
    return np.array(out)


def test_cal_finds_neighbours_among_normalised_features_as_the_official_code(monkeypatch):
    # a hand case where length and direction disagree: rows 0-2 point one way at growing
    # lengths, rows 3-5 another way; raw distances pair the long rows across directions
    features = np.array(
        [[1, 0.1], [4, 0.3], [9, 0.2], [0.1, 1], [0.3, 4.2], [8.8, 9.1]], dtype=np.float64
    )
    logits = np.random.default_rng(5).normal(size=(6, 3))
    probs = torch.from_numpy(logits).softmax(dim=1).numpy()
    ctx = synthetic_ctx(n=6)
    outputs = {"features": features.astype(np.float32), "logits": logits.astype(np.float32)}
    scores = {}
    for normalize in (True, False):
        method = get_method("cal", {"neighbors": 2, "per_class": False, "normalize": normalize})
        monkeypatch.setattr(method, "outputs", lambda ctx, run: outputs)
        scores[normalize] = method.score_run(ctx, 0)
    assert get_method("cal").normalize  # the official form is the default
    official = _official_cal(features.astype(np.float32).astype(np.float64), probs, 2)
    np.testing.assert_allclose(scores[True], official, rtol=1e-6)
    assert not np.allclose(scores[False], official, rtol=1e-3)


def _sym_kl(p, q):
    return 0.5 * np.sum(p * np.log(p / q)) + 0.5 * np.sum(q * np.log(q / p))


def test_contextual_diversity_each_pick_is_farthest_in_symmetric_kl_from_the_picked_set():
    rng = np.random.default_rng(3)
    log_probs = torch.from_numpy(rng.normal(size=(15, 4)) * 2).log_softmax(dim=1).numpy()
    order = contextual_diversity_order(log_probs, 4)
    probs = np.exp(log_probs)
    assert order[0] == 4 and sorted(order.tolist()) == list(range(15))
    for t in range(1, 15):
        picked = order[:t]
        coverage = [
            min(_sym_kl(probs[j], probs[c]) for c in picked) if j not in picked else -1
            for j in range(15)
        ]
        assert coverage[order[t]] == pytest.approx(max(coverage))


def test_contextual_diversity_method_keeps_each_class_k_center_prefix(cache_dir):
    ctx = _ctx(cache_dir)
    method = get_method("contextual_diversity", {})
    kept = _kept(method, ctx, fraction=0.5, balance=True)
    log_probs = torch.from_numpy(proxy_outputs(ctx, Proxy(), 0, 4)["logits"]).double()
    log_probs = log_probs.log_softmax(dim=1)
    quotas = class_quotas(ctx.labels, 32)
    for c in (0, 1):
        members = np.flatnonzero(ctx.labels == c)
        start = np.random.default_rng(method.run_seed(0, "cd-start", c)).integers(members.size)
        order = contextual_diversity_order(log_probs[members].numpy(), int(start))
        assert set(kept[ctx.labels[kept] == c].tolist()) == set(members[order[: quotas[c]]])


class _Linear(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, z):
        return z.flatten(1) @ self.weight.T + self.bias


@pytest.mark.parametrize("overshoot", [0.0, 0.02])
def test_deepfool_on_a_linear_model_is_the_closed_form_distance_to_the_nearest_boundary(overshoot):
    rng = np.random.default_rng(4)
    weight = torch.from_numpy(rng.normal(size=(4, 6)))
    bias = torch.from_numpy(rng.normal(size=4))
    z = torch.from_numpy(rng.normal(size=(10, 1, 2, 3)))
    norms = deepfool_norms(_Linear(weight, bias), z, max_iter=50, overshoot=max(overshoot, 1e-9))
    f = z.flatten(1) @ weight.T + bias
    for i in range(10):
        p = int(f[i].argmax())
        distance = min(
            abs(f[i, k] - f[i, p]) / (weight[k] - weight[p]).norm() for k in range(4) if k != p
        )
        assert norms[i].item() == pytest.approx((1 + max(overshoot, 1e-9)) * distance.item())


def test_deepfool_keeps_the_smallest_perturbations(cache_dir):
    ctx = _ctx(cache_dir)
    method = get_method("deepfool", {"max_iter": 20})
    scores = method.score(ctx)
    assert np.all(scores <= 0)
    kept = _kept(method, ctx, fraction=0.75)
    assert set(kept.tolist()) == set(np.argsort(-scores, kind="stable")[:16].tolist())


def test_vog_equals_a_loop_over_saved_checkpoints(cache_dir):
    ctx = _ctx(cache_dir)
    checkpoints = []
    train_proxy(
        ctx, Proxy(), 0, 4, on_epoch=lambda e, m: e > 0 and checkpoints.append(copy.deepcopy(m))
    )
    grads = []
    for model in checkpoints:
        model.eval()
        per_example = []
        for i in range(ctx.n):
            z = model.normalize(ctx.train_x[i : i + 1]).double().requires_grad_(True)
            logit = model.double().head(model.double().body(z))[0, ctx.train_y[i]]
            (g,) = torch.autograd.grad(logit, z)
            per_example.append(g[0].mean(dim=0).numpy())
        grads.append(np.stack(per_example))
    grads = np.stack(grads)  # [checkpoints, N, H, W]
    raw = np.sqrt(((grads - grads.mean(axis=0)) ** 2).mean(axis=0)).mean(axis=(1, 2))
    expected = np.empty_like(raw)
    for c in (0, 1):
        members = ctx.labels == c
        expected[members] = (raw[members] - raw[members].mean()) / raw[members].std()
    np.testing.assert_allclose(get_method("vog", {}).score(ctx), expected, rtol=1e-4, atol=1e-6)


def test_a_classifier_wrapper_keeps_deepfool_in_the_normalised_space():
    model = Classifier(nn.Flatten(), 4, 2, (0.5,), (0.25,))
    x = torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8)
    z = model.normalize(x)
    assert torch.allclose(deepfool._OnNormalised(model)(z), model(x))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_each_new_method_config_names_every_option_and_builds(module):
    name = module.__name__.split(".")[-1]
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert list(config)[:2] == ["name", "label"] and config["label"] is None
    assert config["name"] == name
    options = {k: v for k, v in config.items() if k not in ("name", "label")}
    # the shared proxy schedule and seed are interpolations (score.proxy_epochs, proxy_seed)
    options["proxy"] = {**options["proxy"], "epochs": None, "seed": 0}
    options = {
        k: (1 if isinstance(v, str) and v.startswith("${") else v) for k, v in options.items()
    }
    method = get_method(name, options)
    assert type(method).__module__ == module.__name__
    assert set(options) == {f.name for f in fields(method)}
    assert config["proxy"] == {
        "model": None,
        "epochs": "${score.proxy_epochs}",
        "seed": "${score.proxy_seed}",
    }
    assert all(getattr(method, attr) for attr in ("summary", "paper", "direction"))
