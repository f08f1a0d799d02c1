"""Herding (Welling, ICML 2009), as DeepCore's baseline: greedy mean matching in feature space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from methods.base import ScoreContext
from methods.features import FeatureMethod, group_order_scores
from methods.registry import register


def herding_order(features: torch.Tensor) -> np.ndarray:
    """The greedy herding sequence over all rows of `features` [n, D].

    Step t + 1 picks x_j = argmin_{j not picked} ||mu - (S_t + x_j) / (t + 1)||_2, with mu
    the mean of all n features and S_t the sum of the t picked ones; ties go to the
    lowest index. Equivalently argmin_j ||x_j||^2 - 2 <x_j, (t + 1) mu - S_t>.
    """
    n = features.shape[0]
    mean = features.mean(dim=0)
    squared = (features * features).sum(dim=1)
    picked_sum = torch.zeros_like(mean)
    available = torch.ones(n, dtype=torch.bool, device=features.device)
    order = torch.empty(n, dtype=torch.long, device=features.device)
    for t in range(n):
        cost = squared - 2.0 * (features @ ((t + 1) * mean - picked_sum))
        pick = cost.masked_fill(~available, float("inf")).argmin()
        order[t] = pick
        available[pick] = False
        picked_sum += features[pick]
    return order.cpu().numpy()


@register
@dataclass
class Herding(FeatureMethod):
    """The herding sequence on the proxy's features, as a score: first picked = highest.

    Global by default; `per_class` herds within each class (DeepCore's balanced mode,
    best read with prune.balance=true).
    """

    name = "herding"
    summary = (
        "(n - rank) / n in the greedy sequence whose running mean of proxy features tracks "
        "the full mean"
    )
    paper = (
        "Welling. Herding Dynamical Weights to Learn. ICML 2009; as in Guo et al. DeepCore. "
        "DEXA 2022"
    )
    direction = "high = picked earlier = kept first (keep=hard = the herding selection)"

    per_class: bool = False

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        features = self.features(ctx, run)
        return group_order_scores(
            features, ctx.labels, self.per_class, lambda rows, _: herding_order(rows)
        )
