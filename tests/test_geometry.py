"""Geometry at scale: the same selections as the pre-change float64 code, on fewer picks.

The references restate the earlier implementations (float64, the full objective
recomputed at every pick, a brute-force kNN graph); the fast ones use float32 Gram
rows, faiss, and stop where the selection reads no further.
"""

import json
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from benchmarks.errors import ConfigError
from benchmarks.speed import geometry as geometry_speed
from benchmarks.speed import knn as knn_recall
from benchmarks.speed.geometry import CIFAR, IMAGENET, extrapolate, growth
from methods import get_method
from methods.core.features import GramRows, group_order_scores, picks_needed
from methods.core.knn import _probed_cells, exact_knn
from methods.core.select import PruneSpec, select
from methods.d2 import forward_pass, knn_graph, reverse_order
from methods.herding import herding_order
from methods.kcenter import kcenter_order


def herding_reference(x):
    """Pre-change herding: argmin ||x||^2 - 2 <x, (t + 1) mu - S_t> recomputed at every pick."""
    n = x.shape[0]
    mean, squared = x.mean(axis=0), (x * x).sum(axis=1)
    picked_sum, available, order = np.zeros_like(mean), np.ones(n, bool), []
    for t in range(n):
        cost = squared - 2.0 * (x @ ((t + 1) * mean - picked_sum))
        pick = int(np.where(available, cost, np.inf).argmin())
        order.append(pick)
        available[pick] = False
        picked_sum += x[pick]
    return np.array(order)


def kcenter_reference(x, start):
    """Pre-change k-center: farthest from the picked set, distances by explicit differences."""
    nearest = np.full(x.shape[0], np.inf)
    order, pick = [], start
    for _ in range(x.shape[0]):
        order.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[pick], axis=1) ** 2)
        nearest[pick] = -1.0
        pick = int(nearest.argmax())
    return np.array(order)


def _features(n=240, d=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("budget", [0, 2**30], ids=["row-per-pick", "gram-matrix"])
def test_herding_and_kcenter_orders_equal_the_pre_change_code(budget, monkeypatch):
    monkeypatch.setattr("methods.core.features.GRAM_BYTES", budget)
    x = _features()
    wide = x.astype(np.float64)
    assert (GramRows(x).full is None) == (budget == 0)
    assert herding_order(x).tolist() == herding_reference(wide).tolist()
    assert kcenter_order(x, 11).tolist() == kcenter_reference(wide, 11).tolist()
    assert herding_order(x, 17).tolist() == herding_reference(wide)[:17].tolist()


def test_knn_graph_on_faiss_equals_the_brute_force_graph():
    x = _features(300, 16, seed=1)
    graph = knn_graph(x, 6)
    wide = x.astype(np.float64)
    distance = np.linalg.norm(wide[:, None] - wide[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    knn = np.argsort(distance, axis=1)[:, :6]
    for i in range(300):
        expected = {int(j) for j in knn[i]} | set(np.flatnonzero((knn == i).any(axis=1)).tolist())
        neighbors, lengths = graph.around(i)
        assert set(neighbors.tolist()) == expected
        assert lengths == pytest.approx(distance[i, neighbors], rel=1e-5)


@pytest.mark.parametrize("block", [4, 37, 4096])
def test_exact_knn_over_blocks_equals_the_brute_force_search(block):
    x = _features(150, 8, seed=4)
    squared, found = exact_knn(x, 11, block=block)
    wide = x.astype(np.float64)
    distance = ((wide[:, None] - wide[None]) ** 2).sum(axis=2)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :11]
    assert found.tolist() == nearest.tolist()  # ascending, each row itself first
    assert squared == pytest.approx(np.take_along_axis(distance, nearest, axis=1), abs=1e-4)


def reverse_reference(scores, graph, gamma):
    """D2's reverse message passing as defined: argmax over every unpicked node per pick."""
    current, picked, order = scores.astype(np.float64).copy(), np.zeros(scores.size, bool), []
    for _ in range(scores.size):
        pick = int(np.where(picked, -np.inf, current).argmax())
        order.append(pick)
        picked[pick] = True
        neighbors, lengths = graph.around(pick)
        free = ~picked[neighbors]
        current[neighbors[free]] -= np.exp(-gamma * lengths[free]) * current[pick]
    return np.array(order)


@pytest.mark.parametrize("case", ["positive", "mixed-sign", "ties"])
def test_reverse_order_on_a_heap_equals_the_argmax_loop(case):
    rng = np.random.default_rng(5)
    graph = knn_graph(_features(200, 6, seed=5), 4)
    scores = {
        "positive": forward_pass(rng.random(200), graph, 1.0),
        "mixed-sign": rng.normal(size=200),  # negative picks raise their neighbours
        "ties": rng.integers(0, 3, 200).astype(float),  # equal scores: lowest index first
    }[case]
    gamma = 1e6 if case == "ties" else 0.3  # ties: the weights underflow to 0, no update
    expected = reverse_reference(scores, graph, gamma)
    assert reverse_order(scores, graph, gamma).tolist() == expected.tolist()
    assert reverse_order(scores, graph, gamma, picks=37).tolist() == expected[:37].tolist()


def test_knn_graph_drops_each_point_itself_even_among_duplicates():
    x = np.repeat(_features(5, 3), 4, axis=0)  # every point four times
    graph = knn_graph(x, 2)
    for i in range(20):
        neighbors, lengths = graph.around(i)
        assert i not in neighbors.tolist() and (lengths == 0).any()


SPECS = [
    PruneSpec(fraction=0.3),
    PruneSpec(fraction=0.7),
    PruneSpec(fraction=0.5, balance=True),
    PruneSpec(fraction=0.9, balance=True),
    PruneSpec(fraction=0.5, offset=20),
    PruneSpec(fraction=0.5, keep="easy"),
    PruneSpec(fraction=0.5, strategy="ccs", ccs_beta=0.1, ccs_bins=5, ccs_cut_by="score"),
]


@pytest.mark.parametrize("per_class", [True, False])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_stopping_where_the_selection_reads_no_further_keeps_the_same_examples(per_class, spec):
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), [31, 70, 13, 126])  # uneven classes
    x = _features(labels.size)

    def order(features, group, picks):
        return kcenter_order(features, 0, picks)

    full = group_order_scores(
        SimpleNamespace(labels=labels, n=labels.size, prune=None), x, per_class, order
    )
    ctx = SimpleNamespace(labels=labels, n=labels.size, prune=spec)
    short = group_order_scores(ctx, x, per_class, order)
    seed = int(rng.integers(100))
    assert select(short, labels, spec, seed).tolist() == select(full, labels, spec, seed).tolist()
    if spec.keep == "hard" and spec.strategy == "topk" and not (spec.balance and not per_class):
        assert picks_needed(ctx, 126, per_class) < 126  # and fewer picks were made


def test_the_approximate_knn_graph_is_an_explicit_option_close_to_the_exact_one():
    x = _features(3000, 16, seed=3)
    exact, approximate = knn_graph(x, 5), knn_graph(x, 5, index="ivf")
    found = sum(
        len(set(exact.around(i)[0].tolist()) & set(approximate.around(i)[0].tolist()))
        for i in range(3000)
    )
    assert found / exact.neighbors.size > 0.9
    assert get_method("d2", {}).knn == "exact"
    with pytest.raises(ConfigError, match="method.knn_probes=0 must be >= 1"):
        get_method("d2", {"knn_probes": 0})
    with pytest.raises(ConfigError, match="method.knn='hnsw' is not one of exact, ivf"):
        get_method("d2", {"knn": "hnsw"})


def test_each_cell_probes_its_nearest_cells_until_they_hold_the_rows_asked():
    rng = np.random.default_rng(4)
    centroids = rng.standard_normal((90, 6)).astype(np.float32)
    sizes = rng.integers(0, 40, size=90)
    sizes[7] = 900  # one cell far larger than the rest, as k-means makes on random features
    for rows in (1, 150, 1_000, sizes.sum() + 1):
        probed = _probed_cells(centroids, sizes, rows)
        for cell, cells in enumerate(probed):
            distances = ((centroids - centroids[cell]) ** 2).sum(axis=1)
            nearest = np.argsort(distances, kind="stable")
            held = np.cumsum(sizes[nearest])
            count = min(90, 1 + int(np.sum(held < rows)))  # the first prefix holding `rows`
            assert cells.tolist() == nearest[:count].tolist()


def test_the_recall_of_the_approximate_graph_is_the_share_of_exact_neighbours_found(
    tmp_path, capsys
):
    exact = np.array([[0, 1, 2], [1, 0, 3]])
    assert knn_recall.recall(exact, np.array([[0, 2, 5], [3, 1, 0]])) == pytest.approx(5 / 6)
    out = tmp_path / "knn.json"
    args = ["--sets", "random", "--sizes", "400", "--probes", "2", "1000", "--out", str(out)]
    knn_recall.main([*args, "--faiss-nprobe", "1000"])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["n"], r["dim"], r["search"]) for r in rows] == [
        (400, 512, "ivf_knn, 2 probes"),
        (400, 512, "ivf_knn, 1000 probes"),
        (400, 512, "faiss IVFFlat, nprobe 1000"),
    ]
    assert 0 < rows[0]["recall"] < 1
    assert rows[1]["recall"] == rows[2]["recall"] == 1  # every cell: the exhaustive search
    for key in ("kept_shared_default", "kept_shared_scaled", "graph_kept_hardest_scaled"):
        assert set(rows[0][key]) == {str(f) for f in knn_recall.FRACTIONS}
        assert all(0 <= share <= 1 for share in rows[0][key].values())
    for key in ("kept_shared_default", "kept_shared_scaled"):  # the same graph: the same kept
        assert all(share == 1 for share in rows[1][key].values())
    # without edges D2 keeps the hardest: a graph of far-apart points moves no pick
    far = knn_recall.graph_from_search(*exact_knn(1e6 * np.eye(30, dtype=np.float32), 3))
    hardest = knn_recall.d2_kept(far, np.linspace(0, 1, 30), 0.5, 1.0)
    assert sorted(hardest.tolist()) == list(range(15, 30))
    assert "| random | 400 | 512 | ivf_knn, 1000 probes |" in capsys.readouterr().out


def test_geometry_benchmark_fits_the_growth_and_extrapolates_by_the_classes():
    sizes = [1000, 2000, 4000]
    b, a = growth(sizes, [3e-7 * n**2 for n in sizes])
    assert (b, a) == (pytest.approx(2.0), pytest.approx(3e-7))
    fit = (2.0, 3e-7)
    # per class: 1,000 classes of 1,281 = 100 x ten classes of 1,281 (N = 12,811.67)
    assert extrapolate("herding", fit, 10, IMAGENET) == pytest.approx(100 * 3e-7 * 12811.67**2)
    assert extrapolate("d2_class", fit, 10, IMAGENET) == pytest.approx(100 * 3e-7 * 12811.67**2)
    assert extrapolate("prototypes", fit, 10, IMAGENET) == pytest.approx(100 * 3e-7 * 1281167**2)
    assert extrapolate("d2", fit, 10, CIFAR) == pytest.approx(3e-7 * 50_000**2)


def test_geometry_benchmark_runs_each_method_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "geometry.json"
    methods = ["d2", "d2_class"]
    args = ["--sizes", "300", "600", "--repeats", "1", "--methods", *methods, "--dim", "8"]
    geometry_speed.main([*args, "--out", str(out)])
    payload = json.loads(out.read_text())
    printed = capsys.readouterr().out
    for name in methods:
        assert [r["n"] for r in payload["results"][name]["rows"]] == [300, 600]
        assert all(r["seconds"] > 0 for r in payload["results"][name]["rows"])
        assert f"| {name} |" in printed


def test_prototypes_k_means_settings_are_faiss_defaults_and_explicit_options():
    defaults, method = faiss.ClusteringParameters(), get_method("prototypes", {})
    assert (method.iterations, method.n_init, method.max_points_per_centroid) == (
        defaults.niter,
        defaults.nredo,
        defaults.max_points_per_centroid,
    )
    every_point = get_method("prototypes", {"max_points_per_centroid": None})
    assert every_point.max_points_per_centroid is None
    for bad in ({"iterations": 0}, {"max_points_per_centroid": 0}, {"n_init": 0}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(bad))}=0 must be >= 1"):
            get_method("prototypes", bad)
