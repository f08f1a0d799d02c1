"""No pruning: the full-data reference row of every leaderboard."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import register


@register
@dataclass
class FullData(PruningMethod):
    name = "full"
    summary = "keeps every training example whatever prune.fraction says"
    paper = "reference"
    direction = "none: nothing is removed"
    prunes = False

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        return np.zeros((1, ctx.n))
