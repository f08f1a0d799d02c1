"""CRAIG (Mirzasoleiman, Bilmes, Leskovec, ICML 2020): weighted medoids of last-layer gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.train import LossWeights
from methods.core.base import ScoreContext
from methods.core.features import order_scores, picks_needed
from methods.core.greedy import facility_location_order
from methods.core.last_layer import ClassGradients, GradientMethod, gram_distances
from methods.core.registry import register


def craig_similarity(gram: torch.Tensor) -> np.ndarray:
    """max d - d_ij + 1e-3 over one class, d the gradient distances (DeepCore's shift)."""
    distances = gram_distances(gram)
    return (distances.max() - distances + 1e-3).cpu().numpy()


def medoid_weights(similarity: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """gamma_j = |{i : j = argmax_{s in kept} sim(i, s)}|, the examples each kept one stands for."""
    nearest = np.argmax(similarity[:, kept], axis=1)
    return np.bincount(nearest, minlength=kept.size).astype(np.float64)


def merged_class_order(groups: list[ClassGradients], ctx: ScoreContext) -> np.ndarray:
    """The global greedy over the block-diagonal similarity, up to the picks the selection reads.

    That greedy is the classes' sequences merged by marginal gain (ties to the lower
    index); each class's gains do not increase, so the first `wanted` of the merge need
    from each class only its picks of gain >= the wanted-th largest gain. Classes run
    one at a time (one n_c x n_c similarity in memory): first to their share of the
    depth (`picks_needed` per class), then those whose last gain still reaches the
    wanted-th largest so far continue (twice as deep, similarity recomputed) until none does.
    """
    wanted = picks_needed(ctx, ctx.n, per_class=False)
    orders = [np.zeros(0, dtype=np.int64) for _ in groups]
    gains = [np.zeros(0) for _ in groups]
    depths = [
        g.members.size if wanted >= ctx.n else picks_needed(ctx, g.members.size, per_class=True)
        for g in groups
    ]
    pending = list(range(len(groups)))
    while pending:
        for c in pending:
            similarity = craig_similarity(groups[c].gram())
            more, more_gains = facility_location_order(
                similarity, depths[c] - orders[c].size, after=orders[c]
            )
            orders[c] = np.concatenate([orders[c], more])
            gains[c] = np.concatenate([gains[c], more_gains])
        collected = np.concatenate(gains)
        enough = collected.size >= wanted
        threshold = -np.partition(-collected, wanted - 1)[wanted - 1] if enough else -np.inf
        pending = [
            c
            for c, g in enumerate(groups)
            if orders[c].size < g.members.size and gains[c][-1] >= threshold
        ]
        for c in pending:
            depths[c] = min(groups[c].members.size, 2 * orders[c].size)
    members = np.concatenate([g.members[o] for g, o in zip(groups, orders, strict=True)])
    merged = members[np.lexsort((members, -np.concatenate(gains)))]
    return merged[:wanted]


LOSSES = ("deepcore", "official", "raw")


@register
@dataclass
class CRAIG(GradientMethod):
    """Facility location on gradient similarities, lazy greedy, per class; weighted subset.

    Similarity within a class is max d - d_ij + 1e-3, d the Euclidean distance of
    last-layer gradients (DeepCore's); classes never mix (DeepCore's non-balanced mode
    zeroes cross-class similarities, so its global greedy is the per-class sequences
    merged by marginal gain: `per_class=false`). Each kept example trains with weight
    gamma_j = the number of its class's examples nearest to it, itself included (the
    paper's gamma; DeepCore adds 1). `loss`: deepcore, each batch's sum w l / sum w
    (DeepCore's weighted training); official, the weights scaled to mean 1 over the
    subset, then the plain batch mean of w l (baharanm/craig train_resnet.py at b0374a2,
    lines 310 and 441); raw, the plain batch mean of w l with the counts as they are.
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
        "one proxy training per run; per class an n_c x n_c similarity (8 n_c^2 bytes, one "
        "class at a time), lazy greedy up to the picks the selection reads (per_class=false: "
        "recomputed for each class that must go deeper); weights recompute it once"
    )

    per_class: bool = True
    loss: str = "deepcore"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ConfigError(f"method.loss={self.loss!r} is not one of {', '.join(LOSSES)}")

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        groups = self.class_gradients(ctx, run)
        if not self.per_class:
            return order_scores(merged_class_order(groups, ctx), ctx.n)
        scores = np.empty(ctx.n, dtype=np.float64)
        for group in groups:
            size = group.members.size
            steps = picks_needed(ctx, size, per_class=True)
            order, _ = facility_location_order(craig_similarity(group.gram()), steps)
            scores[group.members] = order_scores(order, size)
        return scores

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights:

        def run_weights(run: int) -> np.ndarray:
            weights = np.zeros(ctx.n, dtype=np.float64)
            for group in self.class_gradients(ctx, run, count_cost=False):
                inside = np.flatnonzero(np.isin(group.members, kept))
                if inside.size:
                    similarity = craig_similarity(group.gram())
                    weights[group.members[inside]] = medoid_weights(similarity, inside)
            return weights[kept]

        values = torch.from_numpy(np.mean(ctx.map_runs(run_weights, self.runs), axis=0))
        if self.loss == "official":
            values = values / values.mean()
        return LossWeights(values, batch_normalise=self.loss == "deepcore")
