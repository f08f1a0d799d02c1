"""Forgetting events (Toneva et al., ICLR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.dynamics import dynamics
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register

NEVER_LEARNED = ("max", "zero")


def forgetting_score(
    forgetting: np.ndarray,
    presentations: np.ndarray,
    ever_correct: np.ndarray,
    never_learned: str = "max",
) -> np.ndarray:
    """Forgetting events per example; never-learned examples get their presentation count.

    A learned example can be forgotten at most once every two presentations, so the
    presentation count ranks never-learned examples above all others, as in the
    original code. `never_learned=zero` gives them 0 instead, the raw event count of
    DeepCore's, CCS's and D2's code (which ranks them as the easiest).
    """
    if never_learned == "zero":
        return forgetting.astype(np.float64)
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
    never_learned: str = "max"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.never_learned not in NEVER_LEARNED:
            raise ConfigError(
                f"method.never_learned={self.never_learned!r} is not one of "
                f"{', '.join(NEVER_LEARNED)}"
            )

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        end = self.schedule_epochs(ctx)

        def run(k: int) -> np.ndarray:
            d = dynamics(ctx, proxy, k, end)
            return forgetting_score(
                d["forgetting"], d["presentations"], d["ever_correct"], self.never_learned
            )

        return np.stack(ctx.map_runs(run, self.runs))
