"""Herding (Welling, ICML 2009), as DeepCore's baseline: greedy mean matching in feature space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod, GramRows, group_order_scores
from methods.core.registry import register


def herding_order(features: np.ndarray, picks: int | None = None) -> np.ndarray:
    """The first `picks` (None = all) of the greedy herding sequence over the rows [n, D].

    Step t + 1 picks x_j = argmin_{j not picked} ||mu - (S_t + x_j) / (t + 1)||_2, with mu
    the mean of all n features and S_t the sum of the t picked ones; ties go to the
    lowest index. Equivalently argmin_j ||x_j||^2 - 2 (t + 1) <x_j, mu> + 2 sum_p <x_j, x_p>,
    so a pick adds one Gram row (float32 products, float64 sums) and costs O(n).
    """
    n = features.shape[0]
    picks = n if picks is None else picks
    wide = features.astype(np.float64)
    squared = (wide * wide).sum(axis=1)
    toward_mean = wide @ wide.mean(axis=0)
    picked_products = np.zeros(n)
    gram = GramRows(features)
    order = np.empty(picks, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    for t in range(picks):
        cost = squared - 2.0 * ((t + 1) * toward_mean - picked_products)
        cost[taken] = np.inf
        pick = int(cost.argmin())
        order[t], taken[pick] = pick, True
        picked_products += gram(pick)
    return order


@register
@dataclass
class Herding(FeatureMethod):
    """The herding sequence on the proxy's features, as a score: first picked = highest.

    Within each class by default (DeepCore's default, balanced); `per_class=false` herds
    over all data. The herding rule is the argmin (the pick that brings the running mean
    closest to the full mean); DeepCore's code takes the argmax of the same distance.
    """

    name = "herding"
    summary = (
        "(n - rank) / n in the greedy sequence whose running mean of proxy features tracks "
        "the full mean (the herding argmin; DeepCore's code takes the argmax)"
    )
    paper = (
        "Welling. Herding Dynamical Weights to Learn. ICML 2009; as in Guo et al. DeepCore. "
        "DEXA 2022"
    )
    direction = "high = picked earlier = kept first (keep=hard = the herding selection)"

    per_class: bool = True

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        return group_order_scores(
            ctx,
            self.features(ctx, run),
            self.per_class,
            lambda x, _, picks: herding_order(x, picks),
        )
