"""CAL (Margatina et al., EMNLP 2021): examples close in features but apart in prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod
from methods.core.registry import register


def nearest_neighbours(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices [n, k] of each row's k nearest other rows (Euclidean), nearest first.

    Exact, `chunk` rows at a time: memory chunk x n distances, never n x n.
    """
    n = features.shape[0]
    squared = (features * features).sum(dim=1)
    out = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=features.device)
        gaps = squared[rows, None] - 2.0 * features[rows] @ features.T + squared[None, :]
        gaps[rows - start, rows] = float("inf")
        out.append(gaps.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def cal_scores(log_probs: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """s_i = 1/k sum_{j in kNN(i)} KL(p_j || p_i), from log-softmax rows [n, K]."""
    log_p_i = log_probs[:, None, :]
    log_p_j = log_probs[neighbours]
    return (log_p_j.exp() * (log_p_j - log_p_i)).sum(dim=2).mean(dim=1)


@register
@dataclass
class CAL(FeatureMethod):
    """Contrastive active learning's acquisition score on the proxy's features and softmax.

    As the paper (and its code): KL(neighbour || example), averaged over the k nearest;
    the highest scores are acquired; neighbours are found among L2-normalised features
    (`normalize`, as the official acquisition/cal.py: torch's `normalize` of the
    representations before its Euclidean KNeighborsClassifier; false: the raw features,
    as DeepCore). Deviations: neighbours come from the training set
    itself (per class with `per_class`, DeepCore's balanced default), in the proxy's
    penultimate features (DeepCore: an ImageNet-pretrained ResNet-18 at 224 px, not
    available offline); DeepCore averages the symmetric KL and keeps the *lowest* scores
    (keep=easy reproduces that direction).
    """

    name = "cal"
    summary = (
        "mean over the k nearest neighbours in proxy feature space of KL(p_neighbour || p_x) "
        "between the proxy's softmax outputs"
    )
    paper = (
        "Margatina et al. Active Learning by Acquiring Contrastive Examples. EMNLP 2021; "
        "as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = predicted unlike its feature-space neighbours = kept first"
    cost = (
        "one proxy training per run; exact k-NN per class in chunks of 1024 rows: O(n_c^2 "
        "D) time, 1024 n_c floats"
    )

    neighbors: int = 10
    per_class: bool = True
    normalize: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.neighbors < 1:
            raise ConfigError(f"method.neighbors={self.neighbors} must be >= 1")

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        outputs = self.outputs(ctx, run)
        features = torch.from_numpy(outputs["features"]).to(ctx.device, torch.float64)
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=1)
        log_probs = torch.from_numpy(outputs["logits"]).to(ctx.device, torch.float64)
        log_probs = log_probs.log_softmax(dim=1)
        labels = ctx.labels
        groups = (
            [np.flatnonzero(labels == c) for c in np.unique(labels)]
            if self.per_class
            else [np.arange(ctx.n)]
        )
        scores = np.empty(ctx.n, dtype=np.float64)
        for members in groups:
            if members.size <= self.neighbors:
                raise ConfigError(
                    f"method.neighbors={self.neighbors} needs more than {self.neighbors} examples "
                    f"per group; a group has {members.size}"
                )
            index = torch.from_numpy(members).to(ctx.device)
            neighbours = nearest_neighbours(features[index], self.neighbors)
            scores[members] = cal_scores(log_probs[index], neighbours).cpu().numpy()
        return scores
