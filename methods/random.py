"""Random pruning: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.seeding import derive_seed
from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import register


@register
@dataclass
class RandomScore(PruningMethod):
    name = "random"
    summary = "i.i.d. uniform score per example, so top-k keeps a uniform random subset"
    paper = "baseline"
    direction = "no direction: hard and easy keep equally random subsets"

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        rng = np.random.default_rng(derive_seed(ctx.seed, "random-score"))
        return rng.random((1, ctx.n))
