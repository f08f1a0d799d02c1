"""Uncertainty of a proxy model's softmax (Coleman et al., ICLR 2020, "Selection via Proxy")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod

PAPER = "Coleman et al. Selection via Proxy: Efficient Data Selection for Deep Learning. ICLR 2020"


@dataclass
class Uncertainty(ProxyMethod):
    """Most uncertain kept first: every score here is oriented so that high = uncertain."""

    summary_name: ClassVar[str]
    runs: int = 1
    epoch: int | None = None

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return {"epoch": self.schedule_epochs(ctx) if self.epoch is None else self.epoch}

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy, epoch = self.proxy_spec, self.resolve(ctx).epoch
        return np.stack(
            ctx.map_runs(
                lambda k: self.orient(
                    at_epoch(dynamics(ctx, proxy, k, epoch), self.summary_name, epoch)
                ),
                self.runs,
            )
        )

    @staticmethod
    def orient(values: np.ndarray) -> np.ndarray:
        return values
