"""Scores -> kept indices. Every rule here works with any method's score.

`prune.fraction` is the fraction of training examples *removed*. The kept set is
ranked by score (highest first for `keep=hard`, lowest first for `keep=easy`),
optionally after skipping `offset` top-ranked examples (Data Diet's sliding
window), per class (`balance`), or stratified over score bins (CCS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError

KEEP_CHOICES = ("hard", "easy")
STRATEGIES = ("topk", "ccs")


@dataclass(frozen=True)
class PruneSpec:
    fraction: float
    keep: str = "hard"
    balance: bool = False
    offset: int = 0
    strategy: str = "topk"
    ccs_beta: float = 0.0
    ccs_bins: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"prune.fraction={self.fraction} is outside [0, 1)")
        if self.keep not in KEEP_CHOICES:
            raise ConfigError(f"prune.keep={self.keep!r} is not one of {', '.join(KEEP_CHOICES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"prune.strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}"
            )
        if self.offset < 0:
            raise ConfigError(f"prune.offset={self.offset} must be >= 0")
        if not 0.0 <= self.ccs_beta < 1.0:
            raise ConfigError(f"prune.ccs.beta={self.ccs_beta} is outside [0, 1)")
        if self.ccs_bins < 1:
            raise ConfigError(f"prune.ccs.bins={self.ccs_bins} must be >= 1")


def kept_count(n: int, fraction: float) -> int:
    """Examples kept when `fraction` of `n` is removed (rounded half up; at least one kept)."""
    return max(1, n - math.floor(fraction * n + 0.5))


def class_quotas(labels: np.ndarray, total: int) -> dict[int, int]:
    """Per-class counts proportional to class sizes, summing to `total` (largest remainder)."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = total * sizes / sizes.sum()
    quotas = np.floor(exact).astype(int)
    order = np.lexsort((classes, -(exact - quotas)))
    for i in order[: total - quotas.sum()]:
        quotas[i] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def select(scores: np.ndarray, labels: np.ndarray, spec: PruneSpec, seed: int) -> np.ndarray:
    """Sorted indices of the examples kept under `spec`."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape[0]} scores for {labels.shape[0]} examples")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    n = scores.shape[0]
    rank = scores if spec.keep == "hard" else -scores
    total = kept_count(n, spec.fraction)
    rng = np.random.default_rng(seed)
    if not spec.balance:
        kept = _pick(rank, np.arange(n), total, spec.offset, spec, rng)
    else:
        parts = []
        for label, quota in class_quotas(labels, total).items():
            members = np.flatnonzero(labels == label)
            offset = round(spec.offset * members.size / n)
            parts.append(_pick(rank[members], members, quota, offset, spec, rng))
        kept = np.concatenate(parts)
    return np.sort(kept)


def _pick(
    rank: np.ndarray, members: np.ndarray, quota: int, offset: int, spec: PruneSpec, rng
) -> np.ndarray:
    """Choose `quota` of `members` by rank (descending, ties by index)."""
    order = members[np.lexsort((members, -rank))]
    if spec.strategy == "ccs":
        ranked = rank[np.lexsort((members, -rank))]
        return _coverage_centric(order, ranked, quota, spec, rng)
    if offset + quota > order.size:
        raise ConfigError(
            f"prune.offset={spec.offset} leaves {order.size - offset} examples, "
            f"fewer than the {quota} to keep"
        )
    return order[offset : offset + quota]


def _coverage_centric(
    order: np.ndarray, ranked: np.ndarray, quota: int, spec: PruneSpec, rng
) -> np.ndarray:
    """CCS (Zheng et al., ICLR 2023): drop the top beta, then sample evenly over score strata.

    Strata are equal-width bins of the score range; the budget is spread by visiting
    strata from the smallest up, each taking min(its size, budget left / strata left).
    """
    cut = int(np.floor(spec.ccs_beta * order.size))
    pool, pool_rank = order[cut:], ranked[cut:]
    if quota > pool.size:
        raise ConfigError(
            f"prune.ccs.beta={spec.ccs_beta} leaves {pool.size} examples, "
            f"fewer than the {quota} to keep"
        )
    edges = np.linspace(pool_rank.min(), pool_rank.max(), spec.ccs_bins + 1)
    stratum = np.clip(np.searchsorted(edges, pool_rank, side="right") - 1, 0, spec.ccs_bins - 1)
    strata = [pool[stratum == s] for s in range(spec.ccs_bins)]
    strata = [s for s in strata if s.size]
    strata.sort(key=lambda s: s.size)
    chosen, budget = [], quota
    for i, members in enumerate(strata):
        take = min(members.size, budget // (len(strata) - i))
        chosen.append(rng.choice(members, size=take, replace=False))
        budget -= take
    return np.concatenate(chosen)
