"""Dynamic pruning: the subset changes every pass, so the method hands the trainer a sampler.

Such a method has no static score to rank by; `score.py` and the selection rules do not
apply to it. The record states the fraction of examples actually presented per pass.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from benchmarks.errors import ConfigError
from benchmarks.train import PassSampler
from methods.core.base import PruningMethod, ScoreContext


class DynamicMethod(PruningMethod):
    dynamic: ClassVar[bool] = True

    @abstractmethod
    def sampler(self, n: int, fraction: float) -> PassSampler:
        """A fresh sampler for `n` training examples at nominal pruned `fraction`."""

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        raise ConfigError(
            f"method '{self.name}' prunes dynamically (a new subset every pass): "
            "it has no static score to export or rank by"
        )
