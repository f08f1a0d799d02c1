"""Prototypes on proxy features, after Sorscher et al. (NeurIPS 2022): distance to a centroid.

The paper clusters a self-supervised (SwAV) embedding; here k-means runs on the
penultimate features of the supervised proxy training, the same features as the other
geometry methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from benchmarks.errors import ConfigError
from methods.base import ScoreContext
from methods.features import FeatureMethod
from methods.registry import register


def prototype_distances(
    features: np.ndarray, clusters: int, normalize: bool, seed: int, n_init: int
) -> np.ndarray:
    """Distance of each feature to its nearest k-means prototype.

    k-means is faiss's (Lloyd's iterations on every point, `n_init` seeded restarts,
    the lowest objective kept). With `normalize` (as the paper does with its embedding),
    features are scaled to unit norm before k-means and the distance is the cosine distance
    1 - max_j <z, c_j / ||c_j||>; otherwise it is the Euclidean distance min_j ||z - c_j||_2.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kmeans = faiss.Kmeans(
        x.shape[1],
        clusters,
        niter=KMEANS_ITERATIONS,
        nredo=n_init,
        seed=seed % 2**31,
        max_points_per_centroid=x.shape[0],
        min_points_per_centroid=1,
    )
    kmeans.train(x)
    centers = kmeans.centroids
    if normalize:
        centers = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centers, dtype=np.float32))
    _, nearest = index.search(x, 1)
    return _distances_to(x, centers.astype(np.float64), nearest[:, 0], normalize)


def _distances_to(
    x: np.ndarray, centers: np.ndarray, nearest: np.ndarray, cosine: bool, chunk: int = 65536
) -> np.ndarray:
    """The distance of each row to its nearest center, in float64, in chunks of rows."""
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], chunk):
        rows = x[start : start + chunk].astype(np.float64)
        picked = centers[nearest[start : start + chunk]]
        if cosine:
            out[start : start + chunk] = 1.0 - (rows * picked).sum(axis=1)
        else:
            out[start : start + chunk] = np.linalg.norm(rows - picked, axis=1)
    return out


# Lloyd iterations per restart (faiss's default is 25; k-means on features settles well before)
KMEANS_ITERATIONS = 50


@register
@dataclass
class Prototypes(FeatureMethod):
    """k-means on the supervised proxy's features (k = `clusters`, None = number of classes)."""

    name = "prototypes"
    summary = (
        "prototypes on proxy features: distance of the supervised proxy's penultimate feature "
        "to its nearest k-means centroid (cosine on unit-norm features by default)"
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
        features = self.features(ctx, run)
        seed = self.run_seed(run, "kmeans")
        return prototype_distances(features, clusters, self.normalize, seed, self.n_init)
