"""Selection rules against brute-force references and hand-computed cases."""

import numpy as np
import pytest

from benchmarks.errors import ConfigError
from methods.core.select import PruneSpec, class_quotas, kept_count, select


def test_kept_count_removes_the_fraction():
    assert kept_count(1000, 0.0) == 1000
    assert kept_count(1000, 0.3) == 700
    assert kept_count(1437, 0.5) == 718  # 718.5 removed rounds up to 719
    assert kept_count(10, 0.99) == 1


def test_keep_hard_keeps_the_highest_scores():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    labels = np.zeros(5, dtype=int)
    kept = select(scores, labels, PruneSpec(fraction=0.4), seed=0)
    assert kept.tolist() == [1, 2, 3]


def test_keep_easy_keeps_the_lowest_scores():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    labels = np.zeros(5, dtype=int)
    kept = select(scores, labels, PruneSpec(fraction=0.4, keep="easy"), seed=0)
    assert kept.tolist() == [0, 2, 4]


def test_offset_skips_the_top_ranked_window():
    scores = np.arange(10, dtype=float)  # rank order: 9, 8, 7, ...
    labels = np.zeros(10, dtype=int)
    kept = select(scores, labels, PruneSpec(fraction=0.7, offset=2), seed=0)
    assert kept.tolist() == [5, 6, 7]


def test_offset_beyond_the_data_is_an_error():
    with pytest.raises(ConfigError, match="prune.offset=9"):
        select(np.arange(10.0), np.zeros(10, int), PruneSpec(fraction=0.5, offset=9), seed=0)


def test_ties_break_by_index_so_selection_is_deterministic():
    kept = select(np.ones(6), np.zeros(6, int), PruneSpec(fraction=0.5), seed=0)
    assert kept.tolist() == [0, 1, 2]


def test_balanced_selection_matches_brute_force_per_class():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=203)
    scores = rng.random(203)
    spec = PruneSpec(fraction=0.6, balance=True)
    kept = select(scores, labels, spec, seed=0)
    quotas = class_quotas(labels, kept_count(203, 0.6))
    assert sum(quotas.values()) == kept.size == kept_count(203, 0.6)
    for c, q in quotas.items():
        members = [i for i in range(203) if labels[i] == c]
        top = sorted(members, key=lambda i: -scores[i])[:q]
        assert sorted(top) == [i for i in kept if labels[i] == c]


def test_class_quotas_are_proportional_within_one():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    quotas = class_quotas(labels, 33)
    assert sum(quotas.values()) == 33
    for c, size in zip((0, 1, 2), (50, 30, 20), strict=True):
        assert abs(quotas[c] - 33 * size / 100) < 1


def test_unbalanced_hard_selection_can_skew_classes():
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.r_[np.ones(10), np.zeros(10)]
    assert set(labels[select(scores, labels, PruneSpec(fraction=0.5), seed=0)]) == {0}
    balanced = select(scores, labels, PruneSpec(fraction=0.5, balance=True), seed=0)
    assert np.bincount(labels[balanced]).tolist() == [5, 5]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.2])
def test_fraction_outside_unit_interval_is_named(fraction):
    with pytest.raises(ConfigError, match=f"prune.fraction={fraction}"):
        PruneSpec(fraction=fraction)


def test_bad_keep_and_strategy_are_named():
    with pytest.raises(ConfigError, match="prune.keep='middle'"):
        PruneSpec(fraction=0.5, keep="middle")
    with pytest.raises(ConfigError, match="prune.strategy='best'"):
        PruneSpec(fraction=0.5, strategy="best")


def test_ccs_drops_the_hardest_beta_and_covers_every_stratum():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    labels = np.zeros(1000, int)
    spec = PruneSpec(fraction=0.8, strategy="ccs", ccs_beta=0.1, ccs_bins=10, ccs_cut_by="score")
    kept = select(scores, labels, spec, seed=3)
    assert kept.size == 200
    hardest = np.argsort(-scores)[:100]
    assert not set(hardest) & set(kept)
    # the remaining score range [min, 1.0001 x max) is cut in 10 equal bins; each gets 20
    pool = np.setdiff1d(np.arange(1000), hardest)
    edges = np.linspace(scores[pool].min(), scores[pool].max() * 1.0001, 11)
    per_bin = np.histogram(scores[kept], bins=edges)[0]
    assert per_bin.tolist() == [20] * 10


def test_ccs_gives_small_strata_all_their_examples():
    scores = np.r_[np.full(3, 0.05), np.linspace(0.5, 1.0, 97)]
    spec = PruneSpec(fraction=0.5, strategy="ccs", ccs_bins=2)
    kept = select(scores, np.zeros(100, int), spec, seed=0)
    assert kept.size == 50
    assert {0, 1, 2} <= set(kept.tolist())


def test_non_finite_scores_are_rejected():
    with pytest.raises(ValueError, match="1 scores are NaN"):
        select(np.array([1.0, np.nan]), np.zeros(2, int), PruneSpec(fraction=0.5), seed=0)
