"""Scores -> kept indices. Every rule here works with any method's score.

`prune.fraction` is the fraction of training examples *removed*. The kept set is
ranked by score (highest first for `keep=hard`, lowest first for `keep=easy`),
optionally after skipping `offset` top-ranked examples (a sliding window counted
from the start of the keep order: the hardest end under keep=hard; Data Diet counts
from the easiest end, which is keep=easy with the same offset), per class
(`balance`), or stratified over score bins (CCS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.errors import ConfigError

KEEP_CHOICES = ("hard", "easy")
STRATEGIES = ("topk", "ccs")
CCS_CUTS = ("aum", "score")


@dataclass(frozen=True)
class PruneSpec:
    fraction: float
    keep: str = "hard"
    balance: bool = False
    offset: int = 0
    strategy: str = "topk"
    ccs_beta: float = 0.0
    ccs_bins: int = 50
    ccs_cut_by: str = "aum"

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
        if self.ccs_cut_by not in CCS_CUTS:
            raise ConfigError(
                f"prune.ccs.cut_by={self.ccs_cut_by!r} is not one of {', '.join(CCS_CUTS)}"
            )
        if self.strategy == "ccs" and self.keep == "easy":
            raise ConfigError(
                "prune.keep=easy with prune.strategy=ccs would cut the easiest examples as the "
                "'hard' end; CCS cuts the hardest: use keep=hard"
            )

    @property
    def cuts_by_aum(self) -> bool:
        """CCS's hard cut by its own AUM: the cut needs that score besides the ranking one."""
        return self.strategy == "ccs" and self.ccs_beta > 0 and self.ccs_cut_by == "aum"


def ccs_beta_for(beta: float | Mapping[Any, float], fraction: float) -> float:
    """CCS's beta for the removed `fraction`: a number, or a {fraction: beta} table (the papers
    tune beta per pruning rate)."""
    if not isinstance(beta, Mapping):
        return float(beta)
    for key, value in beta.items():
        if math.isclose(float(key), fraction, abs_tol=1e-9):
            return float(value)
    raise ConfigError(
        f"prune.ccs.beta has no entry for prune.fraction={fraction}; "
        f"its fractions: {', '.join(str(k) for k in beta)}"
    )


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


def select(
    scores: np.ndarray,
    labels: np.ndarray,
    spec: PruneSpec,
    seed: int,
    cut_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted indices of the examples kept under `spec`.

    `cut_scores` (high = hardest) orders CCS's hard cut when `spec.cuts_by_aum`: CCS's own
    AUM, whatever the ranking score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape[0]} scores for {labels.shape[0]} examples")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    n = scores.shape[0]
    rank = scores if spec.keep == "hard" else -scores
    cut = rank
    if spec.cuts_by_aum:
        if cut_scores is None or np.shape(cut_scores) != scores.shape:
            raise ValueError("prune.ccs.cut_by=aum needs CCS's AUM of every example")
        cut = np.asarray(cut_scores, dtype=np.float64)
    total = kept_count(n, spec.fraction)
    rng = np.random.default_rng(seed)
    if not spec.balance:
        kept = _pick(rank, cut, np.arange(n), total, spec.offset, spec, rng)
    else:
        parts = []
        for label, quota in class_quotas(labels, total).items():
            members = np.flatnonzero(labels == label)
            offset = round(spec.offset * members.size / n)
            parts.append(_pick(rank[members], cut[members], members, quota, offset, spec, rng))
        kept = np.concatenate(parts)
    return np.sort(kept)


def _pick(
    rank: np.ndarray,
    cut: np.ndarray,
    members: np.ndarray,
    quota: int,
    offset: int,
    spec: PruneSpec,
    rng,
) -> np.ndarray:
    """Choose `quota` of `members` by rank (descending, ties by index)."""
    if spec.strategy == "ccs":
        return _coverage_centric(members, rank, cut, quota, spec, rng)
    order = members[np.lexsort((members, -rank))]
    if offset + quota > order.size:
        raise ConfigError(
            f"prune.offset={spec.offset} leaves {order.size - offset} examples, "
            f"fewer than the {quota} to keep"
        )
    return order[offset : offset + quota]


def _coverage_centric(
    members: np.ndarray,
    rank: np.ndarray,
    cut: np.ndarray,
    quota: int,
    spec: PruneSpec,
    rng,
) -> np.ndarray:
    """CCS (Zheng et al., ICLR 2023) as its official `train.py`/`Coreset.py`: drop the
    floor(beta n) hardest by `cut` (its AUM by default), then sample evenly over strata of
    the ranking score.

    Strata: `bins` equal-width bins from the pool's minimum score to its maximum x 1.0001
    (the official upper edge, so the maximum falls in the last bin; for a maximum <= 0,
    maximum + 1e-4 |maximum|, or + 1e-4); the budget is spread by visiting strata from the
    smallest up, each taking min(its size, budget left // strata left).
    """
    by_cut = np.lexsort((members, -cut))
    dropped = int(np.floor(spec.ccs_beta * members.size))
    pool, pool_rank = members[by_cut[dropped:]], rank[by_cut[dropped:]]
    if quota > pool.size:
        raise ConfigError(
            f"prune.ccs.beta={spec.ccs_beta} leaves {pool.size} examples, "
            f"fewer than the {quota} to keep"
        )
    low, high = pool_rank.min(), pool_rank.max()
    upper = high * 1.0001 if high > 0 else high + 1e-4 * (abs(high) or 1.0)
    step = (upper - low) / spec.ccs_bins
    stratum = np.minimum(np.floor((pool_rank - low) / step).astype(int), spec.ccs_bins - 1)
    strata = [pool[stratum == s] for s in range(spec.ccs_bins)]
    strata = [s for s in strata if s.size]
    strata.sort(key=lambda s: s.size)
    chosen, budget = [], quota
    for i, members in enumerate(strata):
        take = min(members.size, budget // (len(strata) - i))
        chosen.append(rng.choice(members, size=take, replace=False))
        budget -= take
    return np.concatenate(chosen)
