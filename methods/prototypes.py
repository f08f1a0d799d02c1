"""Prototypes on proxy features, after Sorscher et al. (NeurIPS 2022): distance to a centroid.

The paper clusters a self-supervised (SwAV) embedding; here k-means runs on the
penultimate features of the supervised proxy training, the same features as the other
geometry methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.faiss_lib import load_faiss
from methods.core.features import FeatureMethod
from methods.core.registry import register


def prototype_distances(
    features: np.ndarray,
    clusters: int,
    normalize: bool,
    seed: int,
    n_init: int = 1,
    iterations: int = 25,
    max_points_per_centroid: int | None = 256,
) -> np.ndarray:
    """Distance of each feature to its nearest k-means prototype.

    k-means is faiss's (`faiss.Kmeans`): `n_init` seeded restarts of `iterations` Lloyd
    iterations, the lowest objective kept, each trained on a seeded random sample of
    `max_points_per_centroid` x `clusters` points when there are more (None: on every
    point). The defaults are faiss's own (25 iterations, 1 run, 256 points per
    centroid). k-means is a heuristic: the centroids are a local optimum of the sample's
    objective, not of every point's; the distances are then exact, every point to its
    nearest of those centroids. With `normalize` (as the paper does with its embedding),
    features are scaled to unit norm before k-means and the distance is the cosine distance
    1 - max_j <z, c_j / ||c_j||>; otherwise it is the Euclidean distance min_j ||z - c_j||_2.
    """
    faiss = load_faiss()
    x = np.ascontiguousarray(features, dtype=np.float32)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kmeans = faiss.Kmeans(
        x.shape[1],
        clusters,
        niter=iterations,
        nredo=n_init,
        seed=seed % 2**31,
        max_points_per_centroid=max_points_per_centroid or x.shape[0],
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
    x: np.ndarray, centers: np.ndarray, nearest: np.ndarray, cosine: bool, chunk: int = 4096
) -> np.ndarray:
    """The distance of each row to its nearest center, in float64, in chunks of rows (small
    enough to stay in cache: 4,096 x 512 float64 is 16 MiB)."""
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], chunk):
        rows = x[start : start + chunk].astype(np.float64)
        picked = centers[nearest[start : start + chunk]]
        if cosine:
            out[start : start + chunk] = 1.0 - np.einsum("ij,ij->i", rows, picked)
        else:
            out[start : start + chunk] = np.linalg.norm(rows - picked, axis=1)
    return out


@register
@dataclass
class Prototypes(FeatureMethod):
    """k-means on the supervised proxy's features (k = `clusters`, None = number of classes).

    `n_init`, `iterations` and `max_points_per_centroid` are faiss's k-means settings, at
    faiss's defaults: the paper clusters with k-means (Sorscher et al. 2022) but
    no iteration count, restart count or training sample was found in a source here.
    """

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
    n_init: int = 1
    iterations: int = 25
    max_points_per_centroid: int | None = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clusters is not None and self.clusters < 1:
            raise ConfigError(f"method.clusters={self.clusters} must be >= 1")
        if self.n_init < 1:
            raise ConfigError(f"method.n_init={self.n_init} must be >= 1")
        if self.iterations < 1:
            raise ConfigError(f"method.iterations={self.iterations} must be >= 1")
        if self.max_points_per_centroid is not None and self.max_points_per_centroid < 1:
            raise ConfigError(
                f"method.max_points_per_centroid={self.max_points_per_centroid} must be >= 1 "
                "or null (every point)"
            )

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        clusters = ctx.num_classes if self.clusters is None else self.clusters
        if clusters > ctx.n:
            raise ConfigError(f"method.clusters={clusters} exceeds the {ctx.n} examples")
        features = self.features(ctx, run)
        seed = self.run_seed(run, "kmeans")
        return prototype_distances(
            features,
            clusters,
            self.normalize,
            seed,
            self.n_init,
            self.iterations,
            self.max_points_per_centroid,
        )
