"""Submodular selection (DeepCore's `submodular.py`) on cosine of last-layer gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.features import order_scores, picks_needed
from methods.core.greedy import facility_location_order, graph_cut_order, log_determinant_order
from methods.core.last_layer import GradientMethod, cosine_kernel
from methods.core.registry import register

FUNCTIONS = ("facility_location", "graph_cut", "log_determinant")


@register
@dataclass
class Submodular(GradientMethod):
    """Greedy sequence of a submodular function on 0.5 + 0.5 cos(g_i, g_j), within each class.

    As DeepCore: g = last-layer loss gradients of the proxy; `function` facility location,
    graph cut (lam) or log-determinant. Deviations: always per class (DeepCore's
    balance=True; its default balance=False needs the N x N kernel: here at most
    8 n_c^2 bytes, one class at a time); exact greedy (lazy for facility location) in
    place of DeepCore's approximate lazy greedy; the log-determinant gain is
    log det K_{S+e} - log det K_S (DeepCore's code ranks by K_eS K_S^-1 K_Se, the part
    subtracted, and so picks the most redundant element).
    """

    name = "submodular"
    summary = (
        "(n_c - rank) / n_c in the greedy sequence of facility location, graph cut or "
        "log-determinant over 0.5 + 0.5 cos of last-layer gradients, per class"
    )
    paper = (
        "Iyer et al. Submodular Combinatorial Information Measures with Applications in "
        "Machine Learning. ALT 2021; as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier by the greedy = kept first (keep=hard = the selection)"
    cost = (
        "one proxy training per run; per class an n_c x n_c kernel (8 n_c^2 bytes); "
        "facility location lazy greedy, graph cut O(n_c^2), log-det O(n_c r^2), r <= K (D "
        "+ 1) + 1"
    )

    function: str = "log_determinant"
    lam: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.function not in FUNCTIONS:
            raise ConfigError(
                f"method.function={self.function!r} is not one of {', '.join(FUNCTIONS)}"
            )

    def order(self, kernel: np.ndarray, steps: int) -> np.ndarray:
        if self.function == "facility_location":
            return facility_location_order(kernel, steps)[0]
        if self.function == "graph_cut":
            return graph_cut_order(kernel, self.lam, steps)
        return log_determinant_order(kernel, steps=steps)

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        scores = np.empty(ctx.n, dtype=np.float64)
        for group in self.class_gradients(ctx, run):
            kernel = cosine_kernel(group.gram()).cpu().numpy()
            steps = picks_needed(ctx, group.members.size, per_class=True)
            scores[group.members] = order_scores(self.order(kernel, steps), group.members.size)
        return scores
