"""Feature-space and training-dynamics methods against hand-computed and brute-force references."""

import math
import statistics
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from synthetic import synthetic_ctx

from benchmarks.cache import read_artifact, write_artifact
from benchmarks.data.source import TensorSource
from benchmarks.errors import ConfigError
from methods import d2, dyn_unc, herding, kcenter, moderate, prototypes, tdds
from methods.core.dynamics import DynamicsRecorder, Proxy, dynamics, proxy_material, train_proxy
from methods.core.features import order_scores, proxy_features
from methods.core.registry import get_method
from methods.core.select import PruneSpec, kept_count, select
from methods.d2 import Graph, forward_pass, knn_graph, reverse_order
from methods.dyn_unc import dynamic_uncertainty
from methods.herding import herding_order
from methods.kcenter import kcenter_order
from methods.moderate import class_median_distances, median_band_scores
from methods.prototypes import prototype_distances
from methods.tdds import tdds_scores

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
MODULES = (moderate, prototypes, herding, kcenter, tdds, dyn_unc, d2)


def _ctx(cache_dir=None, n=64, seed=0):
    return synthetic_ctx(cache_dir, n=n, seed=seed)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One score cache for the module, so that each proxy training runs once."""
    return tmp_path_factory.mktemp("field-cache")


def test_proxy_features_are_the_trained_proxys_eval_features_and_are_cached(tmp_path):
    ctx = _ctx(tmp_path)
    found = proxy_features(ctx, Proxy(), 0, 2)
    model = train_proxy(_ctx(), Proxy(), 0, stop_epoch=2)
    with torch.no_grad():
        hand = model.eval().features(ctx.train_x).numpy()
    assert found.shape == (64, 256) and found.dtype == np.float32
    assert found == pytest.approx(hand, abs=1e-5)
    assert ctx.cost.trainings_run == 1 and ctx.cost.proxy_epochs == 2
    again = _ctx(tmp_path)
    assert proxy_features(again, Proxy(), 0, 2) == pytest.approx(found)
    assert again.cost.trainings_run == 0 and again.cost.proxy_epochs == 2


def test_moderate_keeps_the_median_band_of_a_hand_computed_case():
    # class 0 on a line: median feature (3, 0); class 1 (even count): median (13.5, 1.5)
    features = np.array(
        [[0, 0], [1, 0], [3, 0], [7, 0], [8, 0], [10, 0], [11, 5], [16, 1], [20, 2]], dtype=float
    )
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    hand = [3, 2, 0, 4, 5, math.sqrt(14.5), math.sqrt(18.5), math.sqrt(6.5), math.sqrt(42.5)]
    distances = class_median_distances(features, labels)
    assert distances == pytest.approx(hand)
    # ascending: 2, 1, 7, 0, 5, 3, 6, 4, 8; keeping 5 of 9 keeps sorted[2:7], the middle band
    kept = select(median_band_scores(distances), labels, PruneSpec(fraction=4 / 9), seed=0)
    assert kept.tolist() == [0, 3, 5, 6, 7]
    easy = select(median_band_scores(distances), labels, PruneSpec(fraction=5 / 9, keep="easy"), 0)
    assert easy.tolist() == [1, 2, 4, 8]  # keep=easy keeps both tails, two each


def test_prototype_distance_is_to_the_nearest_centroid_by_hand():
    a = np.array([[9.0, 0.0], [10.0, 1.0], [11.0, 0.0]])
    b = a[:, ::-1]
    features = np.concatenate([a, b])
    centre = np.array([10.0, 1 / 3])
    hand = np.linalg.norm(a - centre, axis=1)
    euclid = prototype_distances(features, clusters=2, normalize=False, seed=0, n_init=3)
    assert euclid == pytest.approx(np.concatenate([hand, hand]))
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    cosine = 1 - unit @ (mean / np.linalg.norm(mean))
    found = prototype_distances(features, clusters=2, normalize=True, seed=0, n_init=3)
    assert found == pytest.approx(np.concatenate([cosine, cosine]), abs=1e-6)  # float32 k-means
    # the two middle points sit nearest their prototype: kept first under keep=easy
    kept = select(euclid, np.zeros(6, int), PruneSpec(fraction=4 / 6, keep="easy"), seed=0)
    assert kept.tolist() == [1, 4]


def test_kcenter_each_pick_maximises_the_distance_to_the_picked_set():
    points = np.random.default_rng(3).normal(size=(30, 2))
    order = kcenter_order(points.astype(np.float32), start=7)
    assert order[0] == 7 and sorted(order.tolist()) == list(range(30))
    for t in range(1, 30):
        picked = points[order[:t]]
        gap = {
            c: np.linalg.norm(picked - points[c], axis=1).min()
            for c in range(30)
            if c not in order[:t]
        }
        assert gap[order[t]] == pytest.approx(max(gap.values()))


def test_herding_each_step_brings_the_running_mean_closest_to_the_full_mean():
    points = np.random.default_rng(4).normal(size=(10, 3))
    mu = points.mean(axis=0)
    order = herding_order(points.astype(np.float32))
    assert sorted(order.tolist()) == list(range(10))
    for t in range(10):
        gap = {
            c: np.linalg.norm(points[[*order[:t], c]].mean(axis=0) - mu)
            for c in range(10)
            if c not in order[:t]
        }
        assert gap[order[t]] == pytest.approx(min(gap.values()))


def test_herding_mean_approaches_the_full_mean_faster_than_random_subsets():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(200, 5))
    mu = points.mean(axis=0)
    order = herding_order(points.astype(np.float32))
    for k in (5, 10, 20, 40):
        herded = np.linalg.norm(points[order[:k]].mean(axis=0) - mu)
        random = np.mean(
            [
                np.linalg.norm(points[rng.choice(200, k, replace=False)].mean(axis=0) - mu)
                for _ in range(50)
            ]
        )
        assert herded < 0.5 * random


def test_order_scores_make_top_k_reproduce_the_greedy_prefix_for_every_budget():
    order = np.random.default_rng(6).permutation(30)
    scores = order_scores(order)
    assert scores[order[0]] == 1.0
    for k in range(1, 31):
        kept = select(scores, np.zeros(30, int), PruneSpec(fraction=(30 - k) / 30), seed=0)
        assert kept.tolist() == sorted(order[:k].tolist())


def test_per_class_herding_with_balance_reproduces_each_class_sequence(cache_dir):
    ctx = _ctx(cache_dir)
    scores = get_method("herding", {"per_class": True}).score(ctx)
    features = proxy_features(ctx, Proxy(), 0, 4)
    spec = PruneSpec(fraction=0.5, balance=True)
    kept = set(select(scores, ctx.labels, spec, seed=0).tolist())
    for label in (0, 1):
        members = np.flatnonzero(ctx.labels == label)
        sequence = members[herding_order(features[members])]
        by_score = members[np.argsort(-scores[members], kind="stable")]
        assert by_score.tolist() == sequence.tolist()
        quota = len(kept & set(members.tolist()))
        assert kept & set(members.tolist()) == set(sequence[:quota].tolist())


def test_kcenter_method_is_deterministic_given_the_score_seed(cache_dir):
    first = get_method("kcenter", {"per_class": False}).score(_ctx(cache_dir))
    again = get_method("kcenter", {"per_class": False}).score(_ctx(cache_dir))
    assert first.tolist() == again.tolist()
    assert sorted(first.tolist()) == pytest.approx((np.arange(1, 65) / 64).tolist())


class _Scripted(torch.nn.Module):
    """Returns whatever logits the test sets, to script the recorder's per-epoch softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]]


def _record(script: list[torch.Tensor], y: torch.Tensor) -> dict[str, np.ndarray]:
    rec = DynamicsRecorder(TensorSource(torch.zeros(len(y), 1, 1, 1), y), eval_batch_size=64)
    model = _Scripted()
    for epoch, logits in enumerate(script):
        model.logits = logits
        rec.on_epoch(epoch, model)
    return rec.arrays()


def test_prob_shift_is_tdds_per_epoch_contribution_by_hand():
    y = torch.tensor([0])
    script = [torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])]
    shift = _record(script, y)["prob_shift"]
    # epoch 0 has no previous epoch; 0.5/0.5 -> 0.75/0.25: 0.75 ln(1.5) + 0.25 ln(2)
    assert shift[:, 0].tolist() == pytest.approx([0.0, 0.75 * math.log(1.5) + 0.25 * math.log(2)])


def _official_tdds(probs: np.ndarray, window: int, decay: float) -> np.ndarray:
    """The official importance_evaluation loop, on softmax [H, N, K] after epochs 1..H."""
    horizon = probs.shape[0]
    total = np.zeros(probs.shape[1])
    for k in range(horizon - window + 1):
        kd = []
        for j in range(k, k + window - 1):
            log = np.log(probs[j + 1] + 1e-8) - np.log(probs[j] + 1e-8)
            kd.append(np.abs(probs[j + 1] * log).sum(axis=1))
        kd = np.array(kd)
        norm = np.linalg.norm(kd - kd.sum(0) / (window - 1), axis=0)
        total += norm * decay * (1 - decay) ** (horizon - window - k)
    return total


def test_tdds_matches_the_official_loop_on_scripted_probabilities():
    rng = np.random.default_rng(7)
    y = torch.tensor([0, 1, 2, 0])
    script = [torch.from_numpy(rng.normal(size=(4, 3))).float() for _ in range(7)]
    shifts = _record(script, y)["prob_shift"].astype(np.float64)
    probs = np.stack([torch.softmax(s.double(), 1).numpy() for s in script[1:]])
    for window, decay in [(3, 0.9), (4, 0.5), (6, 1.0)]:
        found = tdds_scores(shifts, window, decay)
        assert found == pytest.approx(_official_tdds(probs, window, decay), rel=1e-5)


def test_tdds_method_reads_the_first_horizon_epochs_of_the_recorded_run(cache_dir):
    ctx = _ctx(cache_dir)
    runs = get_method("tdds", {"horizon": 4, "window": 3, "decay": 0.9}).score_runs(ctx)
    d = dynamics(ctx, Proxy(), 0, 4)
    assert runs[0] == pytest.approx(tdds_scores(d["prob_shift"][:5].astype(float), 3, 0.9))
    with pytest.raises(ConfigError, match="method.window=2"):
        get_method("tdds", {"horizon": 4, "window": 2})


def test_dynamic_uncertainty_matches_a_hand_loop():
    p = np.random.default_rng(8).random((7, 5))
    hand = [statistics.mean(statistics.stdev(p[k : k + 3, i]) for k in range(5)) for i in range(5)]
    assert dynamic_uncertainty(p, 3) == pytest.approx(hand)


def test_dyn_unc_method_uses_the_true_class_probability_after_each_epoch(cache_dir):
    ctx = _ctx(cache_dir)
    runs = get_method("dyn_unc", {"window": 2}).score_runs(ctx)
    p = dynamics(ctx, Proxy(), 0, 4)["p_true"][1:].astype(float)
    hand = [statistics.mean(statistics.stdev(p[k : k + 2, i]) for k in range(3)) for i in range(64)]
    assert runs[0] == pytest.approx(hand)
    with pytest.raises(ConfigError, match="longer than the proxy's 4 epochs"):
        get_method("dyn_unc", {"window": 5}).score_runs(ctx)


def test_d2_message_passing_and_reverse_suppression_on_a_five_node_path_by_hand():
    # 1-D positions 0, 1, 3, 6, 10 with k=1: the symmetrised graph is the path 0-1-2-3-4
    graph = knn_graph(torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]], dtype=torch.float64), 1)
    assert graph.indptr.tolist() == [0, 1, 3, 5, 7, 8]
    assert graph.neighbors.tolist() == [1, 0, 2, 1, 3, 2, 4, 3]
    assert graph.distances.tolist() == pytest.approx([1, 1, 2, 2, 3, 3, 4, 4])
    s = np.array([1.0, 2.0, 3.0, 1.0, 5.0])
    e = math.exp
    forward = forward_pass(s, graph, gamma=1.0)
    hand = [
        1 + e(-1) * 2,
        2 + e(-1) * 1 + e(-2) * 3,
        3 + e(-2) * 2 + e(-3) * 1,
        1 + e(-3) * 3 + e(-4) * 5,
        5 + e(-4) * 1,
    ]
    assert forward == pytest.approx(hand)
    # gamma_r = 0.5: pick 4, then 2 (3.32); 1 drops to 2.77 - e^-1 * 3.32 = 1.55 < s0 = 1.74,
    # so 0 is picked before 1 although its forward score is lower
    assert hand[0] < hand[1] and hand[1] - e(-1) * hand[2] < hand[0]
    assert reverse_order(forward, graph, gamma=0.5).tolist() == [4, 2, 0, 1, 3]
    assert np.argsort(-forward, kind="stable").tolist() == [4, 2, 1, 0, 3]


def test_d2_without_messages_ranks_by_difficulty(cache_dir):
    ctx = _ctx(cache_dir)
    plain = {"mode": "global", "mis_ratio": 0.0}  # one graph, no hard cut: the order is all
    options = {"difficulty_options": {"epoch": 2}, **plain}
    far = {**options, "gamma_forward": 1e9, "gamma_reverse": 1e9}
    scores = get_method("d2", far).score(ctx)
    el2n = get_method("el2n", {"epoch": 2, "runs": 1}).score(ctx)
    assert np.argsort(-scores).tolist() == np.lexsort((np.arange(64), -el2n)).tolist()
    forgetting = get_method("d2", {**plain, "difficulty": "forgetting"}).score(ctx)
    assert sorted(forgetting.tolist()) == pytest.approx((np.arange(1, 65) / 64).tolist())


def test_d2_graph_is_the_symmetrised_knn_graph_by_brute_force():
    points = np.random.default_rng(9).normal(size=(25, 4))
    graph: Graph = knn_graph(points.astype(np.float32), 3)
    distance = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    knn = np.argsort(distance, axis=1)[:, :3]
    for i in range(25):
        expected = {int(j) for j in knn[i]} | {j for j in range(25) if i in knn[j]}
        neighbors, lengths = graph.around(i)
        assert set(neighbors.tolist()) == expected
        assert lengths == pytest.approx(distance[i, neighbors])


@pytest.mark.parametrize("name", ["moderate", "prototypes"])
def test_ccs_composes_with_feature_scores(cache_dir, name):
    ctx = _ctx(cache_dir)
    scores = get_method(name, {}).score(ctx)
    spec = PruneSpec(fraction=0.5, strategy="ccs", ccs_beta=0.2, ccs_bins=4, ccs_cut_by="score")
    kept = select(scores, ctx.labels, spec, seed=0)
    assert kept.size == kept_count(64, 0.5) == np.unique(kept).size
    hardest = np.lexsort((np.arange(64), -scores))[: int(0.2 * 64)]
    assert not set(hardest.tolist()) & set(kept.tolist())
    balanced = select(scores, ctx.labels, PruneSpec(**{**vars(spec), "balance": True}), seed=0)
    assert balanced.size == 32


def test_dynamics_recorded_before_prob_shift_existed_are_recomputed(tmp_path):
    ctx = _ctx(tmp_path)
    dynamics(ctx, Proxy(), 0, 2)
    path = ctx.cache.path("dynamics", proxy_material(ctx, Proxy(), 0))
    arrays, meta = read_artifact(path)
    meta.pop("summaries")
    write_artifact(path, {k: v for k, v in arrays.items() if k != "prob_shift"}, meta)
    again = _ctx(tmp_path)
    assert "prob_shift" in dynamics(again, Proxy(), 0, 2)
    assert again.cost.trainings_run == 1


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_each_method_config_names_every_option_and_builds(module):
    name = module.__name__.split(".")[-1]
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert list(config)[:2] == ["name", "label"] and config == {
        **config,
        "name": name,
        "label": None,
    }
    # interpolations such as ${score.epoch} resolve against the top-level score protocol
    score = OmegaConf.load(CONF.parent / "config.yaml").score
    resolved = OmegaConf.to_container(
        OmegaConf.create({"score": score, "method": config}), resolve=True
    )["method"]
    options = {k: v for k, v in resolved.items() if k not in ("name", "label", "train_budget")}
    method = get_method(name, options)
    assert type(method).__module__ == module.__name__
    assert set(options) == {f.name for f in fields(method)}
    assert config["proxy"] == {
        "model": None,
        "epochs": "${score.proxy_epochs}",
        "seed": "${score.proxy_seed}",
    }
    assert all(getattr(method, attr) for attr in ("summary", "paper", "direction"))
