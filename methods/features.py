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

from benchmarks.errors import ConfigError
from benchmarks.seeding import derive_seed
from methods.base import ScoreContext
from methods.dynamics import Proxy, derived_sufficient, proxy_material, proxy_network, restate_cost
from methods.proxy_method import ProxyMethod

OUTPUTS = ("features", "logits")


def proxy_outputs(
    ctx: ScoreContext,
    proxy: Proxy,
    run: int,
    epoch: int,
    with_val: bool = False,
    count_cost: bool = True,
) -> dict[str, np.ndarray]:
    """Float32 penultimate `features` [N, D] and `logits` [N, K] of proxy run `run` at `epoch`.

    The network is the recorded proxy training's (no training of its own). Eval mode,
    un-augmented images, autocast off: distances between features need float32.
    `with_val` adds `val_features` and `val_logits`, the same proxy's outputs on the
    validation split (`ctx.val_x`), from the same training. `count_cost=False` reads them
    again without adding their cost to the run's score cost (subset weights after scoring).
    """
    splits = {"": ctx.train_x}
    if with_val:
        if ctx.val_x is None or ctx.val_y is None or not ctx.val_y.numel():
            raise ConfigError("this method needs a validation split: set data.val_size > 0")
        splits["val_"] = ctx.val_x

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        model, cost = proxy_network(ctx, proxy, run, epoch)
        start = time.perf_counter()
        batch_size = ctx.proxy_settings(proxy.epochs).eval_batch_size
        arrays = {}
        for prefix, images in splits.items():
            features, logits = [], []
            with torch.inference_mode(), torch.autocast(ctx.device.type, enabled=False):
                for i in range(0, images.shape[0], batch_size):
                    h = model.features(images[i : i + batch_size]).float()
                    features.append(h.cpu())
                    logits.append(model.head(h).float().cpu())
            arrays[f"{prefix}features"] = torch.cat(features).numpy()
            arrays[f"{prefix}logits"] = torch.cat(logits).numpy()
        meta = {**cost, "seconds": time.perf_counter() - start, "outputs": list(OUTPUTS)}
        return arrays, meta

    def sufficient(meta: dict[str, Any]) -> bool:
        return derived_sufficient(meta) and set(meta.get("outputs", ())) >= set(OUTPUTS)

    material = {**proxy_material(ctx, proxy, run), "epoch": epoch, "output": "features"}
    if with_val:
        material["val"] = ctx.val_hash
    arrays, meta = ctx.store.load_or_compute("features", material, compute, sufficient)
    if count_cost:
        restate_cost(ctx, meta)
    return arrays


def proxy_features(ctx: ScoreContext, proxy: Proxy, run: int, epoch: int) -> np.ndarray:
    """Float32 [N, D] penultimate features of proxy run `run` at epoch `epoch`."""
    return proxy_outputs(ctx, proxy, run, epoch)["features"]


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
        found = self.outputs(ctx, run)["features"]
        return torch.from_numpy(found).to(ctx.device, torch.float64)

    def outputs(
        self, ctx: ScoreContext, run: int, with_val: bool = False, count_cost: bool = True
    ) -> dict[str, np.ndarray]:
        """The proxy's float32 features and logits at the method's epoch (see proxy_outputs)."""
        proxy = self.proxy_spec
        epoch = ctx.proxy_settings(proxy.epochs).epochs if self.epoch is None else self.epoch
        return proxy_outputs(ctx, proxy, run, epoch, with_val, count_cost)

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
