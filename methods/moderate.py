"""Moderate-DS (Xia et al., ICLR 2023): keep the examples of moderate distance to their class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod
from methods.core.registry import register


def class_median_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d_i = ||z_i - median_c(i)||_2, median_c the coordinate-wise median of class c's features."""
    distances = np.empty(labels.shape[0], dtype=np.float64)
    for label in np.unique(labels):
        members = labels == label
        median = np.median(features[members], axis=0)
        distances[members] = np.linalg.norm(features[members] - median, axis=1)
    return distances


def median_band_scores(distances: np.ndarray) -> np.ndarray:
    """-|r_i - (n - 1) / 2|, r_i the rank of d_i among all n (0 = nearest, ties by index).

    Top-k keeps the k ranks around the median distance: the band
    sorted[round(n(1 - rho) / 2) : round(n(1 + rho) / 2)] of the official code.
    """
    n = distances.shape[0]
    ranks = np.empty(n, dtype=np.float64)
    ranks[np.argsort(distances, kind="stable")] = np.arange(n)
    return -np.abs(ranks - (n - 1) / 2)


@register
@dataclass
class ModerateDS(FeatureMethod):
    """Distance of each example's proxy feature to its class's median feature; keep the middle.

    As the official code: class centres are coordinate-wise medians (the paper says
    means), and the band is taken over the distance ranks of all examples together,
    so the score is a rank, not a distance.
    """

    name = "moderate"
    summary = (
        "-|rank of ||z - median feature of its class||_2 - (n-1)/2|: distance ranks nearest "
        "the median distance score highest"
    )
    paper = (
        "Xia et al. Moderate Coreset: A Universal Method of Data Selection for Real-world "
        "Data-efficient Deep Learning. ICLR 2023"
    )
    direction = (
        "high = distance to its class median near the median distance = kept first "
        "(keep=hard keeps the median band; keep=easy keeps both tails)"
    )

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        features = self.features(ctx, run).astype(np.float64)
        return median_band_scores(class_median_distances(features, ctx.labels))
