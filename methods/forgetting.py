"""Forgetting events (Toneva et al., ICLR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.base import ScoreContext
from methods.dynamics import dynamics
from methods.proxy_method import ProxyMethod
from methods.registry import register


def forgetting_score(
    forgetting: np.ndarray, presentations: np.ndarray, ever_correct: np.ndarray
) -> np.ndarray:
    """Forgetting events per example; never-learned examples get their presentation count.

    A learned example can be forgotten at most once every two presentations, so the
    presentation count ranks never-learned examples above all others, as in the
    original code (DeepCore gives them 0, which ranks them as the easiest).
    """
    return np.where(ever_correct, forgetting, presentations).astype(np.float64)


@register
@dataclass
class Forgetting(ProxyMethod):
    name = "forgetting"
    summary = (
        "count of correct->incorrect transitions across the mini-batch presentations "
        "of the whole proxy training"
    )
    paper = (
        "Toneva et al. An Empirical Study of Example Forgetting during Deep Neural Network "
        "Learning. ICLR 2019"
    )
    direction = "high = often forgotten or never learned = hard = kept first"

    runs: int = 1

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        end = ctx.proxy_settings(proxy.epochs).epochs
        rows = []
        for k in range(self.runs):
            d = dynamics(ctx, proxy, k, end)
            rows.append(forgetting_score(d["forgetting"], d["presentations"], d["ever_correct"]))
        return np.stack(rows)
