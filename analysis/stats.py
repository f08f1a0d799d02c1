"""Summaries over seeds and the confidence interval of a method's gain over a baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean and sample std (ddof 1; NaN for one seed) of one cell's seeds."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """Difference of means (method - baseline) and its 95% t interval.

    `kind` is "paired" when both have exactly the same seeds (seed s of each shares the
    initialisation and batch order, so per-seed differences remove that noise), else
    "welch". The bounds are NaN when there are too few seeds for an interval.
    """

    delta: float
    low: float
    high: float
    kind: str


def summarize(values: np.ndarray) -> Summary:
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return Summary(float(values.mean()), std, int(values.size))


def difference(method: Mapping[int, float], baseline: Mapping[int, float]) -> Difference:
    """`method` and `baseline` map seed -> value."""
    if set(method) == set(baseline):
        seeds = sorted(method)
        diffs = np.array([method[s] - baseline[s] for s in seeds], dtype=float)
        delta = float(diffs.mean())
        if diffs.size < 2:
            return Difference(delta, math.nan, math.nan, "paired")
        half = _half_width(float(diffs.std(ddof=1)) / math.sqrt(diffs.size), diffs.size - 1)
        return Difference(delta, delta - half, delta + half, "paired")
    a = np.array(list(method.values()), dtype=float)
    b = np.array(list(baseline.values()), dtype=float)
    delta = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(delta, math.nan, math.nan, "welch")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else 1.0
    half = _half_width(se, dof)
    return Difference(delta, delta - half, delta + half, "welch")


def _half_width(se: float, dof: float) -> float:
    from scipy import stats  # loaded by the tables that need it, not by every analysis command

    return float(stats.t.ppf(0.5 + LEVEL / 2, dof)) * se
