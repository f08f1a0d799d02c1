"""CRAIG (Mirzasoleiman, Bilmes, Leskovec, ICML 2020): weighted medoids of last-layer gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.train import LossWeights
from methods.base import ScoreContext
from methods.features import order_scores, picks_needed
from methods.greedy import facility_location_order
from methods.last_layer import GradientMethod, gram_distances
from methods.registry import register


def craig_similarity(gram: torch.Tensor) -> np.ndarray:
    """max d - d_ij + 1e-3 over one class, d the gradient distances (DeepCore's shift)."""
    distances = gram_distances(gram)
    return (distances.max() - distances + 1e-3).cpu().numpy()


def medoid_weights(similarity: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """gamma_j = |{i : j = argmax_{s in kept} sim(i, s)}|, the examples each kept one stands for."""
    nearest = np.argmax(similarity[:, kept], axis=1)
    return np.bincount(nearest, minlength=kept.size).astype(np.float64)


@register
@dataclass
class CRAIG(GradientMethod):
    """Facility location on gradient similarities, lazy greedy, per class; weighted subset.

    Similarity within a class is max d - d_ij + 1e-3, d the Euclidean distance of
    last-layer gradients (DeepCore's); classes never mix (DeepCore's non-balanced mode
    zeroes cross-class similarities, so its global greedy is the per-class sequences
    merged by marginal gain: `per_class=false`). Each kept example trains with weight
    gamma_j = the number of its class's examples nearest to it, itself included (the
    paper's gamma; DeepCore adds 1), the batch loss normalised by the batch's weights
    (DeepCore's sum w l / sum w) unless `batch_normalise=false`.
    """

    name = "craig"
    summary = (
        "(n_c - rank) / n_c in the lazy-greedy facility-location sequence over last-layer "
        "gradient similarities per class; kept examples weighted by the examples they cover"
    )
    paper = (
        "Mirzasoleiman, Bilmes, Leskovec. Coresets for Data-efficient Training of Machine "
        "Learning Models. ICML 2020; as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier by the greedy = kept first (keep=hard = the CRAIG coreset)"
    cost = (
        "one proxy training per run; per class an n_c x n_c similarity (8 n_c^2 bytes), "
        "lazy greedy over the whole class; weights recompute it once"
    )

    per_class: bool = True
    batch_normalise: bool = True

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        scores = np.empty(ctx.n, dtype=np.float64)
        picks = []
        for group in self.class_gradients(ctx, run):
            size = group.members.size
            steps = picks_needed(ctx, size, per_class=True) if self.per_class else size
            order, gains = facility_location_order(craig_similarity(group.gram()), steps)
            scores[group.members] = order_scores(order, size)
            picks.append((group.members[order], gains))
        if self.per_class:
            return scores
        members = np.concatenate([m for m, _ in picks])
        gains = np.concatenate([g for _, g in picks])
        return order_scores(members[np.lexsort((members, -gains))])

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights:
        runs = []
        for run in range(self.runs):
            weights = np.zeros(ctx.n, dtype=np.float64)
            for group in self.class_gradients(ctx, run, count_cost=False):
                inside = np.flatnonzero(np.isin(group.members, kept))
                if inside.size:
                    similarity = craig_similarity(group.gram())
                    weights[group.members[inside]] = medoid_weights(similarity, inside)
            runs.append(weights[kept])
        values = torch.from_numpy(np.mean(runs, axis=0))
        return LossWeights(values, batch_normalise=self.batch_normalise)
