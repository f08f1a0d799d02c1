"""CRAIG, GradMatch, GLISTER and submodular selection against brute-force references."""

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from synthetic import synthetic_ctx
from test_run import records, run_cli

from benchmarks.errors import ConfigError
from benchmarks.subsets import read_subset, record_subset
from benchmarks.train import weighted_batch_loss
from methods import craig, glister, gradmatch, submodular
from methods.core.dynamics import Proxy
from methods.core.features import picks_needed, proxy_outputs
from methods.core.greedy import facility_location_order, graph_cut_order, log_determinant_order
from methods.core.last_layer import (
    GradientFactors,
    gradient_gram,
    last_layer_gradients,
    output_errors,
)
from methods.core.registry import get_method
from methods.craig import craig_similarity, medoid_weights
from methods.glister import glister_order
from methods.gradmatch import nonnegative_weights, omp_order

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
MODULES = (submodular, craig, gradmatch, glister)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gradient-cache")


def _head(k=3, d=4, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return h, w, b, y


def test_last_layer_gradients_are_autograd_gradients_of_the_head_and_their_gram():
    h, w, b, y = _head()
    rows = []
    for i in range(6):
        wi, bi = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        F.cross_entropy((h[i] @ wi.T + bi)[None], y[i : i + 1]).backward()
        rows.append(torch.cat([bi.grad, wi.grad.flatten()]))
    reference = torch.stack(rows)
    errors = output_errors(h @ w.T + b, y)
    torch.testing.assert_close(last_layer_gradients(errors, h), reference)
    torch.testing.assert_close(gradient_gram(errors, h), reference @ reference.T)


def _brute_force_greedy(n, objective, steps=None):
    """Plain greedy: every candidate's gain recomputed from scratch as F(S + e) - F(S)."""
    order = []
    for _ in range(steps or n):
        base = objective(order)
        gains = [objective([*order, e]) - base if e not in order else -np.inf for e in range(n)]
        order.append(int(np.argmax(gains)))
    return order


def _assert_greedy(order, objective, steps=None, tol=1e-9):
    """Each pick's gain, recomputed from scratch, is the best (up to float ties within tol)."""
    for t in range(steps or len(order)):
        base = objective(list(order[:t]))
        rest = [e for e in range(len(order)) if e not in set(order[:t])]
        best = max(objective([*order[:t], e]) for e in rest) - base
        assert objective(list(order[: t + 1])) - base >= best - tol, t


def _similarity(n=25, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    return d.max() - d + 1e-3


def test_lazy_facility_location_is_the_brute_force_greedy_sequence():
    sim = _similarity()
    order, gains = facility_location_order(sim)

    def objective(chosen):
        return sim[:, chosen].max(axis=1).sum() if chosen else 0.0

    expected = _brute_force_greedy(25, objective)
    assert order.tolist() == expected
    assert gains[3] == pytest.approx(objective(expected[:4]) - objective(expected[:3]))


def test_graph_cut_is_the_brute_force_greedy_sequence():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(20, 5))
    norms = np.linalg.norm(g, axis=1)
    sim = 0.5 + 0.5 * (g @ g.T) / np.outer(norms, norms)

    def objective(chosen):
        return 0.7 * sim[:, chosen].sum() - sim[np.ix_(chosen, chosen)].sum()

    assert graph_cut_order(sim, 0.7).tolist() == _brute_force_greedy(20, objective)


def test_log_determinant_is_the_brute_force_greedy_then_index_order_past_the_rank():
    rng = np.random.default_rng(3)
    full = rng.normal(size=(10, 14))
    kernel = full @ full.T / 14 + 0.05 * np.eye(10)

    def objective(chosen):
        return np.linalg.slogdet(kernel[np.ix_(chosen, chosen)])[1] if chosen else 0.0

    assert log_determinant_order(kernel).tolist() == _brute_force_greedy(10, objective)
    low = rng.normal(size=(9, 3))
    low_kernel = low @ low.T

    def low_objective(chosen):
        return np.linalg.slogdet(low_kernel[np.ix_(chosen, chosen)])[1] if chosen else 0.0

    order = log_determinant_order(low_kernel).tolist()
    head = _brute_force_greedy(9, low_objective, steps=3)
    assert order[:3] == head and order[3:] == sorted(set(range(9)) - set(head))


def _class_gradients(ctx, epoch=4):
    out = proxy_outputs(ctx, Proxy(), 0, epoch)
    h, z = torch.from_numpy(out["features"]).double(), torch.from_numpy(out["logits"]).double()
    grads = last_layer_gradients(output_errors(z, ctx.train_y), h).numpy()
    return {c: (np.flatnonzero(ctx.labels == c), grads[ctx.labels == c]) for c in (0, 1)}


@pytest.mark.parametrize("function", ["facility_location", "graph_cut", "log_determinant"])
def test_submodular_method_orders_each_class_on_the_cosine_kernel_of_its_gradients(
    cache_dir, function
):
    ctx = synthetic_ctx(cache_dir)
    scores = get_method("submodular", {"function": function}).score(ctx)
    for members, grads in _class_gradients(ctx).values():
        norms = np.linalg.norm(grads, axis=1)
        kernel = 0.5 + 0.5 * (grads @ grads.T) / np.outer(norms, norms)
        objective = {
            "facility_location": lambda c, k=kernel: k[:, c].max(axis=1).sum() if c else 0.0,
            "graph_cut": lambda c, k=kernel: k[:, c].sum() - k[np.ix_(c, c)].sum(),
            "log_determinant": lambda c, k=kernel: (
                np.linalg.slogdet(k[np.ix_(c, c)])[1] if c else 0.0
            ),
        }[function]
        _assert_greedy(np.argsort(-scores[members], kind="stable"), objective, steps=12)


def _explicit_craig_similarity(grads):
    d = np.sqrt(np.clip(((grads[:, None] - grads[None]) ** 2).sum(axis=2), 1e-12, None))
    return d.max() - d + 1e-3


def test_craig_is_per_class_facility_location_on_gradient_distances_with_cover_weights(cache_dir):
    ctx = synthetic_ctx(cache_dir)
    method = get_method("craig", {})
    scores = method.score(ctx)
    for members, grads in _class_gradients(ctx).values():
        sim = _explicit_craig_similarity(grads)
        np.testing.assert_allclose(craig_similarity(torch.from_numpy(grads @ grads.T)), sim)

        def objective(chosen, sim=sim):
            return sim[:, chosen].max(axis=1).sum() if chosen else 0.0

        _assert_greedy(np.argsort(-scores[members], kind="stable"), objective)
    kept = np.sort(np.argsort(-scores, kind="stable")[:20])
    weights = method.subset_weights(ctx, kept)
    expected = np.zeros(ctx.n)
    for members, grads in _class_gradients(ctx).values():
        sim = _explicit_craig_similarity(grads)
        inside = np.flatnonzero(np.isin(members, kept))
        for i in range(len(members)):
            expected[members[inside[np.argmax(sim[i, inside])]]] += 1
    np.testing.assert_array_equal(weights.values.numpy(), expected[kept])
    assert weights.values.sum() == ctx.n and weights.batch_normalise


def test_craig_official_loss_scales_weights_to_mean_one_then_takes_the_batch_mean(cache_dir):
    ctx = synthetic_ctx(cache_dir)
    scores = get_method("craig", {}).score(ctx)
    kept = np.sort(np.argsort(-scores, kind="stable")[:20])
    counts = get_method("craig", {"loss": "raw"}).subset_weights(ctx, kept)
    official = get_method("craig", {"loss": "official"}).subset_weights(ctx, kept)
    assert not counts.batch_normalise and not official.batch_normalise
    # train_resnet.py (baharanm/craig) line 310: w / sum(w) * len(w); line 441: mean(l w)
    w = counts.values.numpy()
    np.testing.assert_allclose(official.values.numpy(), w / w.sum() * len(w), rtol=1e-12)
    losses = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    batch = [3, 7, 11, 19]
    hand = float(np.mean(losses.numpy()[batch] * (w / w.mean())[batch]))
    loss = weighted_batch_loss(losses[batch], official.values[batch], official.batch_normalise)
    assert loss.item() == pytest.approx(hand, rel=1e-12)
    with pytest.raises(ConfigError, match="method.loss='mean' is not one of deepcore"):
        get_method("craig", {"loss": "mean"})


def test_medoid_weights_count_the_examples_nearest_each_kept_one_by_hand():
    sim = np.array([[3, 1, 0], [1, 3, 2], [0, 2, 3.0]])
    np.testing.assert_array_equal(medoid_weights(sim, np.array([0, 2])), [1, 2])


def test_craig_global_mode_is_the_greedy_over_the_block_diagonal_similarity(cache_dir):
    ctx = synthetic_ctx(cache_dir)
    block = np.zeros((ctx.n, ctx.n))
    for members, grads in _class_gradients(ctx).values():
        block[np.ix_(members, members)] = _explicit_craig_similarity(grads)

    def objective(chosen):
        return block[:, chosen].max(axis=1).sum() if chosen else 0.0

    scores = get_method("craig", {"per_class": False}).score(ctx)
    _assert_greedy(np.argsort(-scores, kind="stable"), objective, steps=30)


def test_facility_location_continued_after_its_first_picks_is_one_uninterrupted_run():
    sim = _similarity(n=30, seed=11)
    whole, whole_gains = facility_location_order(sim)
    head, _ = facility_location_order(sim, 7)
    rest, rest_gains = facility_location_order(sim, 10, after=head)
    assert [*head, *rest] == whole[:17].tolist()
    np.testing.assert_array_equal(rest_gains, whole_gains[7:17])


def test_craig_global_mode_stopped_at_the_selection_depth_is_the_head_of_the_whole_order(
    cache_dir,
):
    from methods.core.select import PruneSpec

    method = get_method("craig", {"per_class": False})
    whole = np.argsort(-method.score(synthetic_ctx(cache_dir)), kind="stable")
    for fraction in (0.6, 0.2):
        ctx = synthetic_ctx(cache_dir)
        ctx.prune = PruneSpec(fraction=fraction)
        scores = method.score(ctx)
        depth = int((scores > 0).sum())
        assert depth == picks_needed(ctx, ctx.n, per_class=False) < ctx.n
        assert np.argsort(-scores, kind="stable")[:depth].tolist() == whole[:depth].tolist()


def _plain_omp(a, b, lam):
    """DeepCore's numpy OMP restated: a least-squares refit of every chosen set from scratch."""
    chosen, resid = [], b.copy()
    for _ in range(a.shape[0]):
        projections = a @ resid
        projections[chosen] = -np.inf
        chosen.append(int(np.argmax(projections)))
        rows = a[chosen]
        if len(chosen) == 1:
            x = projections[chosen] / (rows[0] @ rows[0])
        else:
            x = np.linalg.lstsq(rows @ rows.T + lam * np.eye(len(chosen)), rows @ b, rcond=None)[0]
        resid = b - rows.T @ x
    return chosen


def test_omp_sequence_equals_a_plain_least_squares_omp():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(18, 7)) * 0.3
    b = a.mean(axis=0)
    assert omp_order(a, b, 1.0).tolist() == _plain_omp(a, b, 1.0)
    assert omp_order(a, b, 0.05).tolist() == _plain_omp(a, b, 0.05)


def test_gradmatch_weights_are_nonnegative_least_squares_of_the_ridge_system():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=6)
    weights = nonnegative_weights(a, b, 1.0)
    system, rhs = a @ a.T + np.eye(4), a @ b
    assert np.all(weights >= 0)
    # KKT of min ||system x - rhs||, x >= 0: the gradient vanishes where x > 0, is >= 0 elsewhere
    grad = system.T @ (system @ weights - rhs)
    assert np.allclose(grad[weights > 0], 0, atol=1e-9) and np.all(grad[weights == 0] >= -1e-9)


def test_gradmatch_method_runs_omp_per_class_and_weights_its_kept_examples(cache_dir):
    ctx = synthetic_ctx(cache_dir)
    method = get_method("gradmatch", {})
    scores = method.score(ctx)
    kept = []
    for members, grads in _class_gradients(ctx).values():
        order = _plain_omp(grads, grads.mean(axis=0), 1.0)
        assert np.argsort(-scores[members], kind="stable").tolist() == order
        kept += members[order[:8]].tolist()
    kept = np.sort(kept)
    weights = method.subset_weights(ctx, kept).values.numpy()
    for members, grads in _class_gradients(ctx).values():
        mine = np.isin(kept, members)
        inside = np.isin(members, kept)
        expected = nonnegative_weights(grads[inside], grads.mean(axis=0), 1.0)
        np.testing.assert_allclose(weights[mine], expected, rtol=1e-8)


def test_glister_gain_is_the_taylor_decrease_of_the_validation_loss_by_hand():
    h, w, b, y = _head(k=3, d=4, n=7, seed=6)
    hv, _, _, yv = _head(k=3, d=4, n=5, seed=7)
    eta = 0.3
    grads = last_layer_gradients(output_errors(h @ w.T + b, y), h)
    order = glister_order(grads.numpy(), (hv @ w.T + b).numpy(), hv.numpy(), yv.numpy(), eta)
    chosen = []
    for t in range(7):
        step = grads[chosen].mean(dim=0) if chosen else torch.zeros(grads.shape[1]).double()
        wt = (w - eta * step[3:].view(3, 4)).requires_grad_(True)
        bt = (b - eta * step[:3]).requires_grad_(True)
        F.cross_entropy(hv @ wt.T + bt, yv).backward()
        val_grad = torch.cat([bt.grad, wt.grad.flatten()])
        gains = [float(grads[e] @ val_grad) if e not in chosen else -np.inf for e in range(7)]
        assert order[t] == int(np.argmax(gains))
        chosen.append(order[t])


def test_factored_gradients_are_the_explicit_matrix_for_omp_and_glister():
    h, w, b, y = _head(k=3, d=4, n=12, seed=8)
    errors = output_errors(h @ w.T + b, y)
    explicit = last_layer_gradients(errors, h).numpy()
    factors = GradientFactors(errors.numpy(), h.numpy())
    v = np.random.default_rng(9).normal(size=explicit.shape[1])
    assert factors.shape == explicit.shape
    np.testing.assert_allclose(factors @ v, explicit @ v, rtol=1e-12, atol=1e-14)
    for i in range(12):
        np.testing.assert_array_equal(factors[i], explicit[i])
    target = explicit.mean(axis=0)
    plain = _plain_omp(explicit, target, 0.5)
    assert omp_order(factors, target, 0.5).tolist() == plain
    assert omp_order(factors, target, 0.5, steps=5).tolist() == plain[:5]
    hv, _, _, yv = _head(k=3, d=4, n=5, seed=10)
    val = ((hv @ w.T + b).numpy(), hv.numpy(), yv.numpy(), 0.3)
    full = glister_order(explicit, *val)  # checked against the Taylor gain by hand above
    assert glister_order(factors, *val).tolist() == full.tolist()
    assert glister_order(factors, *val, steps=4).tolist() == full[:4].tolist()


def test_glister_needs_a_validation_split(cache_dir):
    ctx = synthetic_ctx(cache_dir)
    with pytest.raises(ConfigError, match="needs a validation split: set data.val_size"):
        get_method("glister", {}).score(ctx)


def test_glister_method_matches_each_class_against_its_validation_examples(cache_dir):
    ctx = synthetic_ctx(cache_dir, n=80)
    ctx.val_x, ctx.val_y = ctx.train_x[64:], ctx.train_y[64:]
    ctx.train_x, ctx.train_y = ctx.train_x[:64], ctx.train_y[:64]
    scores = get_method("glister", {}).score(ctx)
    out = proxy_outputs(ctx, Proxy(), 0, 4, with_val=True)
    vh, vz = torch.from_numpy(out["val_features"]).double(), torch.from_numpy(out["val_logits"])
    for c, (members, grads) in _class_gradients(ctx).items():
        mine = ctx.val_y == c
        order = glister_order(
            grads, vz[mine].double().numpy(), vh[mine].numpy(), ctx.val_y[mine].numpy(), 0.05
        )
        assert np.argsort(-scores[members], kind="stable").tolist() == order.tolist()


def test_a_weighted_method_trains_a_weighted_subset_and_says_so_in_the_record(tmp_path):
    proc = run_cli(
        tmp_path, "method=craig", "train.epochs=2", "prune.fraction=0.7", "prune.balance=true"
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    selection = rec["selection"]
    assert selection["weighted"] and selection["weights_batch_normalised"]
    # the weights themselves are in the kept-subset sidecar, one per kept index
    subset = read_subset(record_subset(Path(rec["record_path"]), rec))
    assert len(subset.weights) == len(subset.indices) == selection["kept"]
    assert subset.weights.sum() == pytest.approx(selection["weights_sum"])
    assert selection["weights_sum"] == pytest.approx(selection["total"])
    json.dumps(rec)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_each_gradient_method_config_names_every_option_and_builds(module):
    name = module.__name__.split(".")[-1]
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert list(config)[:2] == ["name", "label"] and config["label"] is None
    assert config["name"] == name
    options = {k: v for k, v in config.items() if k not in ("name", "label")}
    # the shared proxy schedule and seed are interpolations (score.proxy_epochs, proxy_seed)
    options["proxy"] = {**options["proxy"], "epochs": None, "seed": 0}
    method = get_method(name, options)
    assert type(method).__module__ == module.__name__
    assert set(options) == {f.name for f in fields(method)}
    assert config["proxy"] == {
        "model": None,
        "epochs": "${score.proxy_epochs}",
        "seed": "${score.proxy_seed}",
    }
    assert all(getattr(method, attr) for attr in ("summary", "paper", "direction"))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("craig", {}),
        ("gradmatch", {}),
        ("submodular", {"function": "log_determinant"}),
        ("submodular", {"function": "facility_location"}),
        ("submodular", {"function": "graph_cut"}),
        ("contextual_diversity", {}),
    ],
)
def test_greedy_orders_stopped_where_the_selection_reads_no_further_keep_the_same_subset(
    cache_dir, name, options
):
    from methods.core.select import PruneSpec

    for balance in (True, False):
        spec = PruneSpec(fraction=0.6, balance=balance)
        whole = synthetic_ctx(cache_dir)
        stopped = synthetic_ctx(cache_dir)
        stopped.prune = spec
        kept = [
            get_method(name, options).select_subset(c, get_method(name, options).score(c), spec, 0)
            for c in (whole, stopped)
        ]
        assert np.array_equal(*kept)


def test_glister_stopped_where_the_selection_reads_no_further_keeps_the_same_subset(cache_dir):
    from methods.core.select import PruneSpec

    spec = PruneSpec(fraction=0.6, balance=True)
    kept = []
    for prune in (None, spec):
        ctx = synthetic_ctx(cache_dir, n=80)
        ctx.val_x, ctx.val_y = ctx.train_x[64:], ctx.train_y[64:]
        ctx.train_x, ctx.train_y = ctx.train_x[:64], ctx.train_y[:64]
        ctx.prune = prune
        method = get_method("glister", {})
        kept.append(method.select_subset(ctx, method.score(ctx), spec, 0))
    assert np.array_equal(*kept)
