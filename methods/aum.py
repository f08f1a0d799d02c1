"""Area Under the Margin (Pleiss et al., NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.base import ScoreContext
from methods.dynamics import dynamics
from methods.proxy_method import ProxyMethod
from methods.registry import register


@register
@dataclass
class AUM(ProxyMethod):
    name = "aum"
    summary = (
        "minus the mean over training presentations of (true-class logit - largest other logit)"
    )
    paper = (
        "Pleiss et al. Identifying Mislabeled Data using the Area Under the Margin Ranking. "
        "NeurIPS 2020"
    )
    direction = "low AUM = hard; the score is -AUM, so high score = hard = kept first"

    runs: int = 1

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        end = ctx.proxy_settings(proxy.epochs).epochs
        rows = []
        for k in range(self.runs):
            d = dynamics(ctx, proxy, k, end)
            rows.append(-d["margin_sum"] / np.maximum(d["presentations"], 1))
        return np.stack(rows)
