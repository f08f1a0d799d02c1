"""The proxy's penultimate features, shared by every method that works in feature space.

Geometry-based methods (Moderate-DS, prototypes, herding, k-center, D2) read the
same embedding of one (data, proxy, run, epoch), so it is computed once and
cached as an artifact like the training dynamics.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.seeding import derive_seed
from methods.base import ScoreContext
from methods.dynamics import Proxy, proxy_material, train_proxy
from methods.proxy_method import ProxyMethod


def proxy_features(ctx: ScoreContext, proxy: Proxy, run: int, epoch: int) -> np.ndarray:
    """Float32 [N, D] penultimate features of proxy run `run` at epoch `epoch`.

    Eval mode, un-augmented images, no autocast: distances between features need float32.
    """

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        start = time.perf_counter()
        model = train_proxy(ctx, proxy, run, epoch)
        batch_size = ctx.proxy_settings(proxy.epochs).eval_batch_size
        with torch.inference_mode():
            parts = [
                model.features(ctx.train_x[i : i + batch_size]).float().cpu()
                for i in range(0, ctx.n, batch_size)
            ]
        if epoch > 0:
            ctx.cost.trainings_run += 1
        meta = {
            "proxy_epochs": float(epoch),
            "proxy_trainings": int(epoch > 0),
            "seconds": time.perf_counter() - start,
        }
        return {"features": torch.cat(parts).numpy()}, meta

    material = {**proxy_material(ctx, proxy, run), "epoch": epoch, "output": "features"}
    if ctx.cache is None:
        arrays, meta = compute()
    else:
        arrays, meta = ctx.cache.load_or_compute("features", material, compute)
    ctx.cost.add_artifact(meta)
    return arrays["features"]


def order_scores(order: np.ndarray) -> np.ndarray:
    """Scores that make top-k reproduce a greedy order for every k: (n - rank) / n.

    The first pick gets 1, the last 1/n, so keep=hard keeps the first k picks.
    """
    n = order.size
    scores = np.empty(n, dtype=np.float64)
    scores[order] = (n - np.arange(n)) / n
    return scores


@dataclass
class FeatureMethod(ProxyMethod):
    """A score computed from the proxy's features at epoch `epoch` (None = end of its schedule)."""

    runs: int = 1
    epoch: int | None = None

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        return np.stack([self.score_run(ctx, k) for k in range(self.runs)])

    @abstractmethod
    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        """The score of proxy run `run`, shape [ctx.n]."""

    def features(self, ctx: ScoreContext, run: int) -> torch.Tensor:
        """Float64 features [N, D] on the context's device: distances need the precision."""
        proxy = self.proxy_spec
        epoch = ctx.proxy_settings(proxy.epochs).epochs if self.epoch is None else self.epoch
        found = proxy_features(ctx, proxy, run, epoch)
        return torch.from_numpy(found).to(ctx.device, torch.float64)

    def run_seed(self, run: int, purpose: str, *index: int) -> int:
        """A seed for the method's own randomness, fixed by the score seed and the run."""
        return derive_seed(self.proxy_spec.run_seed(run), purpose, *index) % 2**32


GreedyOrder = Callable[[torch.Tensor, int], np.ndarray]


def group_order_scores(
    features: torch.Tensor, labels: np.ndarray, per_class: bool, order_fn: GreedyOrder
) -> np.ndarray:
    """Order scores of `order_fn(features, group) -> order`, over all data or within each class.

    `group` is the class (-1 for all data), for seeds. Within a class the scores are
    (n_c - rank) / n_c, so balanced top-k reproduces each class's greedy order and
    unbalanced top-k interleaves the classes by relative rank.
    """
    if not per_class:
        return order_scores(order_fn(features, -1))
    scores = np.empty(labels.shape[0], dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        index = torch.from_numpy(members).to(features.device)
        scores[members] = order_scores(order_fn(features[index], int(label)))
    return scores
