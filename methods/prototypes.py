"""Self-supervised prototypes (Sorscher et al., NeurIPS 2022): distance to the nearest centroid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from benchmarks.errors import ConfigError
from methods.base import ScoreContext
from methods.features import FeatureMethod
from methods.registry import register


def prototype_distances(
    features: np.ndarray, clusters: int, normalize: bool, seed: int, n_init: int
) -> np.ndarray:
    """Distance of each feature to its nearest k-means prototype.

    With `normalize` (the paper's self-supervised variant), features are scaled to unit
    norm before k-means and the distance is the cosine distance 1 - max_j <z, c_j / ||c_j||>;
    otherwise it is the Euclidean distance min_j ||z - c_j||_2.
    """
    if normalize:
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(n_clusters=clusters, n_init=n_init, random_state=seed).fit(features)
    if not normalize:
        return kmeans.transform(features).min(axis=1)
    centers = kmeans.cluster_centers_
    centers = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    return 1.0 - (features @ centers.T).max(axis=1)


@register
@dataclass
class Prototypes(FeatureMethod):
    """k-means on the proxy's features (k = `clusters`, None = number of classes), seeded."""

    name = "prototypes"
    summary = (
        "distance of the proxy feature to its nearest k-means centroid (cosine on unit-norm "
        "features by default)"
    )
    paper = (
        "Sorscher et al. Beyond neural scaling laws: beating power law scaling via data "
        "pruning. NeurIPS 2022"
    )
    direction = (
        "high = far from its nearest prototype = hard = kept first (keep=easy keeps the "
        "prototypical examples, the paper's choice when data is scarce)"
    )

    clusters: int | None = None
    normalize: bool = True
    n_init: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clusters is not None and self.clusters < 1:
            raise ConfigError(f"method.clusters={self.clusters} must be >= 1")
        if self.n_init < 1:
            raise ConfigError(f"method.n_init={self.n_init} must be >= 1")

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        clusters = ctx.num_classes if self.clusters is None else self.clusters
        if clusters > ctx.n:
            raise ConfigError(f"method.clusters={clusters} exceeds the {ctx.n} examples")
        features = self.features(ctx, run).cpu().numpy()
        seed = self.run_seed(run, "kmeans")
        return prototype_distances(features, clusters, self.normalize, seed, self.n_init)
