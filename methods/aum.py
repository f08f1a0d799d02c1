"""Area Under the Margin (Pleiss et al., NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.dynamics import dynamics
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register

MARGINS = ("logit", "probability")


@register
@dataclass
class AUM(ProxyMethod):
    """`margin=logit`: Pleiss et al.'s mean logit margin; `margin=probability`: CCS's
    `accumulated_margin`, the sum over presentations of p_y - max_{j != y} p_j."""

    name = "aum"
    summary = (
        "minus the mean over training presentations of (true-class logit - largest other logit); "
        "margin=probability: minus CCS's sum of softmax margins"
    )
    paper = (
        "Pleiss et al. Identifying Mislabeled Data using the Area Under the Margin Ranking. "
        "NeurIPS 2020"
    )
    direction = "low AUM = hard; the score is -AUM, so high score = hard = kept first"

    runs: int = 1
    margin: str = "logit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.margin not in MARGINS:
            raise ConfigError(f"method.margin={self.margin!r} is not one of {', '.join(MARGINS)}")

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        end = self.schedule_epochs(ctx)

        def run(k: int) -> np.ndarray:
            d = dynamics(ctx, proxy, k, end)
            if self.margin == "probability":
                return -d["prob_margin_sum"]
            return -d["margin_sum"] / np.maximum(d["presentations"], 1)

        return np.stack(ctx.map_runs(run, self.runs))
