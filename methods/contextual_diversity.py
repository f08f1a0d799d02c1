"""Contextual diversity (Agarwal et al., ECCV 2020), as DeepCore: k-center greedy on softmax."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod, group_order_scores
from methods.core.registry import register


def contextual_diversity_order(
    log_probs: np.ndarray, start: int, steps: int | None = None
) -> np.ndarray:
    """The k-center greedy sequence under the symmetric KL between softmax rows [n, K].

    d(p, q) = 0.5 KL(p || q) + 0.5 KL(q || p) = 0.5 sum_k (p_k - q_k)(log p_k - log q_k).
    Each next pick is argmax_{j not picked} min_{c picked} d(p_j, p_c) (ties to the
    lowest index); memory O(n K), time O(n^2 K) for the whole sequence (numpy: a step
    costs microseconds, not a framework call's overhead).
    """
    probs = np.exp(log_probs)
    n = probs.shape[0]
    nearest = np.full(n, np.inf)
    order = np.empty(n if steps is None else min(steps, n), dtype=np.int64)
    pick = start
    for t in range(order.size):
        order[t] = pick
        distance = 0.5 * ((probs - probs[pick]) * (log_probs - log_probs[pick])).sum(axis=1)
        np.minimum(nearest, distance, out=nearest)
        nearest[pick] = -1.0
        pick = int(nearest.argmax())
    return order


@register
@dataclass
class ContextualDiversity(FeatureMethod):
    """k-center greedy with the symmetric KL between the proxy's softmax vectors as distance.

    As DeepCore's ContextualDiversity (its `balance=True` default: per class); the first
    center is drawn at random, seeded by the score seed and run. The paper's full
    contextual diversity (region-level class-probability vectors for segmentation)
    reduces to this for image classification.
    """

    name = "contextual_diversity"
    summary = (
        "(n - rank) / n in the k-center greedy sequence under 0.5 KL(p||q) + 0.5 KL(q||p) "
        "between the proxy's softmax outputs"
    )
    paper = (
        "Agarwal et al. Contextual Diversity for Active Learning. ECCV 2020; as in Guo et al. "
        "DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier (farthest in prediction space) = kept first"
    cost = (
        "one proxy training per run; k-center over the whole class: O(n_c^2 K) time, O(n_c) memory"
    )

    per_class: bool = True

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        logits = torch.from_numpy(self.outputs(ctx, run)["logits"]).to(ctx.device, torch.float64)
        log_probs = logits.log_softmax(dim=1)

        def order(rows: torch.Tensor, group: int, picks: int) -> np.ndarray:
            rng = np.random.default_rng(self.run_seed(run, "cd-start", group))
            start = int(rng.integers(rows.shape[0]))
            return contextual_diversity_order(rows.cpu().numpy(), start, picks)

        return group_order_scores(ctx, log_probs, self.per_class, order)
