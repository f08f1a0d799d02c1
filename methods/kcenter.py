"""k-Center greedy (Sener & Savarese, ICLR 2018), as DeepCore's baseline, on proxy features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from methods.base import ScoreContext
from methods.features import FeatureMethod, group_order_scores
from methods.registry import register


def kcenter_order(features: torch.Tensor, start: int) -> np.ndarray:
    """The greedy k-center sequence over all rows of `features` [n, D], from row `start`.

    Each next pick is argmax_{j not picked} min_{c picked} ||x_j - x_c||_2 (ties to the
    lowest index), the farthest point from the centers chosen so far.
    """
    n = features.shape[0]
    squared = (features * features).sum(dim=1)
    nearest = torch.full((n,), float("inf"), dtype=features.dtype, device=features.device)
    order = torch.empty(n, dtype=torch.long, device=features.device)
    pick = torch.tensor(start, device=features.device)
    for t in range(n):
        order[t] = pick
        to_pick = (squared - 2.0 * (features @ features[pick]) + squared[pick]).clamp_min(0.0)
        nearest = torch.minimum(nearest, to_pick)
        nearest[pick] = -1.0
        pick = nearest.argmax()
    return order.cpu().numpy()


@register
@dataclass
class KCenterGreedy(FeatureMethod):
    """The k-center greedy sequence on the proxy's features, as a score: first picked = highest.

    The first center is drawn uniformly at random with a seed fixed by the score seed
    and the run (per class with `per_class`, DeepCore's balanced mode).
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

    per_class: bool = False

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        def order(features: torch.Tensor, group: int) -> np.ndarray:
            rng = np.random.default_rng(self.run_seed(run, "kcenter-start", group))
            return kcenter_order(features, int(rng.integers(features.shape[0])))

        return group_order_scores(self.features(ctx, run), ctx.labels, self.per_class, order)
