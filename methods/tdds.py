"""TDDS (Zhang et al., CVPR 2024): how much each example's per-epoch contribution varies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.train import LossWeights
from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod, check_window, sliding_window_epochs
from methods.core.registry import register

WINDOW_MINIMUM = 3
WINDOW_WHY = ": a window needs two epoch-to-epoch changes to vary"


def tdds_scores(shifts: np.ndarray, window: int, decay: float) -> np.ndarray:
    """TDDS from shifts [H + 1, N], row e = R_e = sum_k p_e,k |log p_e,k - log p_e-1,k| (e = 0..H).

    The trajectory is the softmax after epochs 1..H. Window w = 0..H-T covers epochs
    w+1..w+T and its T-1 changes R_e, e = w+2..w+T; its value is
    V_w = sqrt(sum_e (R_e - mean_e R_e)^2) (the L2 norm of the deviations, as the official
    code); the score is sum_w beta (1 - beta)^(H-T-w) V_w, so later windows weigh most.
    """
    horizon = shifts.shape[0] - 1
    total = np.zeros(shifts.shape[1], dtype=np.float64)
    for w in range(horizon - window + 1):
        changes = shifts[w + 2 : w + window + 1]
        spread = np.linalg.norm(changes - changes.mean(axis=0), axis=0)
        total += decay * (1.0 - decay) ** (horizon - window - w) * spread
    return total


@register
@dataclass
class TDDS(ProxyMethod):
    """Temporal dual-depth scoring over the first `horizon` epochs of the proxy training.

    Per-epoch softmax is taken in eval mode on un-augmented images after each epoch
    (the official code uses the training-mode outputs seen during each epoch).
    `horizon=None` is `horizon_fraction` of the proxy's schedule (official README: the first
    30 of 200 epochs, 0.15; at least 3); `window=None` is a third of the horizon (official:
    10 of 30; within 3..horizon). `weighted=true` trains the subset as the official
    train_subset.py (see `subset_weights`).
    """

    name = "tdds"
    summary = (
        "exponentially weighted (decay beta, latest window heaviest) L2 spread of the per-epoch "
        "sum_k p_t|log p_t - log p_t-1| over sliding windows of T of the first H epochs"
    )
    paper = (
        "Zhang et al. Spanning Training Progress: Temporal Dual-Depth Scoring (TDDS) for "
        "Enhanced Dataset Pruning. CVPR 2024"
    )
    direction = "high = contribution varies over training = kept first"

    epoch_options = ("horizon",)

    runs: int = 1
    horizon: int | None = None
    horizon_fraction: float = 0.15
    window: int | None = None
    decay: float = 0.9
    weighted: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window is not None and self.horizon is not None:
            check_window(self.window, self.horizon, WINDOW_MINIMUM, WINDOW_WHY)
        if not 0.0 < self.decay <= 1.0:
            raise ConfigError(f"method.decay={self.decay} is outside (0, 1]")

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return sliding_window_epochs(
            self.horizon,
            self.window,
            self.horizon_fraction,
            self.schedule_epochs(ctx),
            WINDOW_MINIMUM,
            WINDOW_WHY,
        )

    def score(self, ctx: ScoreContext) -> np.ndarray:
        self._scores = super().score(ctx)
        return self._scores

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights | None:
        """`weighted`: the official subset training, each batch's mean loss times the batch
        mean of the TDDS score min-max normalised over the whole training set."""
        if not self.weighted:
            return None
        scores = getattr(self, "_scores", None)
        if scores is None:
            scores = self.score(ctx)
        span = scores.max() - scores.min()
        normalised = (scores - scores.min()) / (span if span > 0 else 1.0)
        return LossWeights(torch.from_numpy(normalised[kept]).float(), batch_mean_scale=True)

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy, resolved = self.proxy_spec, self.resolve(ctx)
        horizon, window = resolved.horizon, resolved.window

        def run(k: int) -> np.ndarray:
            d = dynamics(ctx, proxy, k, horizon)
            shifts = np.stack([at_epoch(d, "prob_shift", e) for e in range(horizon + 1)])
            return tdds_scores(shifts, window, self.decay)

        return np.stack(ctx.map_runs(run, self.runs))
