"""k-Center greedy (Sener & Savarese, ICLR 2018), as DeepCore's baseline, on proxy features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod, GramRows, group_order_scores
from methods.core.registry import register


def kcenter_order(features: np.ndarray, start: int, picks: int | None = None) -> np.ndarray:
    """The first `picks` (None = all) of the greedy k-center sequence over the rows [n, D].

    Each next pick is argmax_{j not picked} min_{c picked} ||x_j - x_c||_2 (ties to the
    lowest index), the farthest point from the centers chosen so far; a pick updates
    the nearest-center distances with one Gram row, O(n).
    """
    n = features.shape[0]
    picks = n if picks is None else picks
    wide = features.astype(np.float64)
    squared = (wide * wide).sum(axis=1)
    nearest = np.full(n, np.inf)
    gram = GramRows(features)
    order = np.empty(picks, dtype=np.int64)
    pick = start
    for t in range(picks):
        order[t] = pick
        to_pick = np.maximum(squared - 2.0 * gram(pick) + squared[pick], 0.0)
        np.minimum(nearest, to_pick, out=nearest)
        nearest[pick] = -1.0
        pick = int(nearest.argmax())
    return order


@register
@dataclass
class KCenterGreedy(FeatureMethod):
    """The k-center greedy sequence on the proxy's features, as a score: first picked = highest.

    Within each class by default (DeepCore's default, balanced; `per_class=false`: over
    all data). The first center is drawn uniformly at random with a seed fixed by the
    score seed and the run (and the class).
    """

    name = "kcenter"
    summary = (
        "(n - rank) / n in the greedy sequence that adds the proxy feature farthest from "
        "all chosen centers"
    )
    paper = (
        "Sener, Savarese. Active Learning for Convolutional Neural Networks: A Core-Set "
        "Approach. ICLR 2018; as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier = kept first (keep=hard = the k-center selection)"

    per_class: bool = True

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        def order(features: np.ndarray, group: int, picks: int) -> np.ndarray:
            rng = np.random.default_rng(self.run_seed(run, "kcenter-start", group))
            return kcenter_order(features, int(rng.integers(features.shape[0])), picks)

        return group_order_scores(ctx, self.features(ctx, run), self.per_class, order)
