"""The proxy's penultimate features, shared by every method that works in feature space.

Geometry-based methods (Moderate-DS, prototypes, herding, k-center, D2) read the
same embedding of one (data, proxy, run, epoch), so it is computed once and
cached as an artifact like the training dynamics.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from benchmarks.seeding import derive_seed
from methods.core.base import ScoreContext
from methods.core.dynamics import (
    Proxy,
    derived_artifact,
    derived_sufficient,
    prepare_networks,
    proxy_material,
    restate_cost,
)
from methods.core.proxy_method import ProxyMethod
from methods.core.select import kept_count

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
    splits = {"": ctx.source}
    if with_val:
        val = ctx.val_source
        if val is None or not val.n:
            raise ConfigError("this method needs a validation split: set data.val_size > 0")
        splits["val_"] = val
    batch_size = ctx.proxy_settings(proxy.epochs).eval_batch_size

    def rows(model: Classifier) -> dict[str, torch.Tensor]:
        def outputs(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            features, logits = [], []
            with torch.inference_mode(), torch.autocast(ctx.device.type, enabled=False):
                for i in range(0, images.shape[0], batch_size):
                    h = model.features(images[i : i + batch_size]).float()
                    features.append(h.cpu())
                    logits.append(model.head(h).float().cpu())
            return {"features": torch.cat(features), "logits": torch.cat(logits)}

        arrays = {}
        for prefix, source in splits.items():
            for name, values in ctx.sharded_rows(source, outputs).items():
                arrays[f"{prefix}{name}"] = values
        return arrays

    def sufficient(meta: dict[str, Any]) -> bool:
        return derived_sufficient(meta) and set(meta.get("outputs", ())) >= set(OUTPUTS)

    arrays, meta = derived_artifact(
        ctx,
        "features",
        outputs_material(ctx, proxy, run, epoch, with_val),
        proxy,
        run,
        epoch,
        rows,
        sufficient,
        {"outputs": list(OUTPUTS)},
    )
    if count_cost:
        restate_cost(ctx, meta)
    return arrays


def outputs_material(
    ctx: ScoreContext, proxy: Proxy, run: int, epoch: int, with_val: bool
) -> dict[str, Any]:
    """What the proxy's outputs at `epoch` are cached by (with the validation split's or not)."""
    material = {**proxy_material(ctx, proxy, run), "epoch": epoch, "output": "features"}
    if with_val:
        material["val"] = ctx.val_hash
    return material


def proxy_features(ctx: ScoreContext, proxy: Proxy, run: int, epoch: int) -> np.ndarray:
    """Float32 [N, D] penultimate features of proxy run `run` at epoch `epoch`."""
    return proxy_outputs(ctx, proxy, run, epoch)["features"]


def order_scores(order: np.ndarray, n: int | None = None) -> np.ndarray:
    """Scores that make top-k reproduce a greedy order for every k: (n - rank) / n.

    The first pick gets 1, the last of n picks 1/n, so keep=hard keeps the first k
    picks. An order of fewer than `n` picks (the selection reads no further) leaves
    the examples never picked at 0, below every pick.
    """
    n = order.size if n is None else n
    scores = np.zeros(n, dtype=np.float64)
    scores[order] = (n - np.arange(order.size)) / n
    return scores


def picks_needed(ctx: ScoreContext, group_size: int, per_class: bool) -> int:
    """How many picks of a greedy order over a group of `group_size` the run's selection reads.

    keep=hard top-k keeps the first k (+ offset) picks of a global order, and at most
    ceil(q n_c) + 1 picks of each class's order (q the fraction kept, offset included),
    balanced or not: a pick of relative rank r / n_c > q is outranked by more than q n
    others. Any other rule (keep=easy, CCS, balance over a global order) reads the whole
    order, as does a context without a selection (a score export).
    """
    spec = ctx.prune
    if spec is None or spec.keep != "hard" or spec.strategy != "topk":
        return group_size
    if spec.balance and not per_class:
        return group_size
    depth = (kept_count(ctx.n, spec.fraction) + spec.offset) / ctx.n
    return min(group_size, math.ceil(depth * group_size) + 1)


# the Gram matrix of a group is kept whole below this size; above it, each row is one pass
GRAM_BYTES = 512 * 2**20


class GramRows:
    """Rows <x_i, x_j>_j of float32 features [n, D], the one product a greedy pick needs.

    Below `GRAM_BYTES` (n <= 11,585: a class of CIFAR or ImageNet) the n x n Gram matrix
    of the group is computed once by one matrix product, and a pick costs O(n); above,
    each row is one pass over the features, O(n D), and the memory stays O(n).
    """

    def __init__(self, features: np.ndarray) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        n = self.x.shape[0]
        self.full = (self.x @ self.x.T).numpy() if 4 * n * n <= GRAM_BYTES else None

    def __call__(self, i: int) -> np.ndarray:
        if self.full is not None:
            return self.full[i]
        return (self.x @ self.x[i]).numpy()


@dataclass
class FeatureMethod(ProxyMethod):
    """A score computed from the proxy's features at epoch `epoch` (None = end of its schedule)."""

    runs: int = 1
    epoch: int | None = None

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return {"epoch": self.schedule_epochs(ctx) if self.epoch is None else self.epoch}

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        """Each run's score, its features computed by every rank on its shard of the
        examples; the proxy trainings first, spread over the ranks."""
        proxy, epoch = self.proxy_spec, self.resolve(ctx).epoch

        def stored(run: int) -> bool:
            return any(
                ctx.store.find("features", outputs_material(ctx, proxy, run, epoch, with_val))
                is not None
                for with_val in (False, True)
            )

        prepare_networks(ctx, proxy, self.runs, epoch, stored)
        return np.stack([self.score_run(ctx, k) for k in range(self.runs)])

    @abstractmethod
    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        """The score of proxy run `run`, shape [ctx.n]."""

    def features(self, ctx: ScoreContext, run: int) -> np.ndarray:
        """Float32 features [N, D] (on the host: the geometry runs on faiss and BLAS)."""
        return self.outputs(ctx, run)["features"]

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


GreedyOrder = Callable[[np.ndarray, int, int], np.ndarray]


def group_order_scores(
    ctx: ScoreContext, features: np.ndarray, per_class: bool, order_fn: GreedyOrder
) -> np.ndarray:
    """Order scores of `order_fn(features, group, picks) -> order`, over all data or per class.

    `group` is the class (-1 for all data), for seeds; `picks` is how much of the order
    the selection reads (`picks_needed`). Within a class the scores are (n_c - rank) / n_c,
    so balanced top-k reproduces each class's greedy order and unbalanced top-k
    interleaves the classes by relative rank.
    """
    labels = ctx.labels
    if not per_class:
        picks = picks_needed(ctx, labels.size, per_class=False)
        return order_scores(order_fn(features, -1, picks), labels.size)
    scores = np.empty(labels.shape[0], dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picks = picks_needed(ctx, members.size, per_class=True)
        order = order_fn(features[members], int(label), picks)
        scores[members] = order_scores(order, members.size)
    return scores
