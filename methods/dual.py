"""DUAL (Cho et al., ICML 2025): difficulty x uncertainty of the true-class probability, early."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod, check_window, sliding_window_epochs
from methods.core.registry import register
from methods.core.select import PruneSpec, kept_count, select

SAMPLING = ("topk", "beta")
# the official code's constants: Beta(16 - b, b) with b = 15 (1 - anchor) (1 - r^c_d), anchored
# on the mean prediction of the 10 highest-scored examples
BETA_SCALE = 15.0
ANCHORS = 10
# a window's std needs two epochs
WINDOW_MINIMUM = 2


def dual_scores(p_true: np.ndarray, window: int) -> np.ndarray:
    """Mean over sliding windows of `window` epochs of std(p) * (1 - mean(p)), p_true [T, N].

    The std is the sample std (T - 1 in the denominator), as torch's default in the
    official code; its constant factor 10 is left out (it changes no ranking).
    """
    windows = np.lib.stride_tricks.sliding_window_view(p_true, window, axis=0)
    return (windows.std(axis=-1, ddof=1) * (1.0 - windows.mean(axis=-1))).mean(axis=0)


def beta_probabilities(
    mean_p: np.ndarray, scores: np.ndarray, removed: float, c_d: float
) -> np.ndarray:
    """DUAL's sampling distribution: Beta(mean_p; 16 - b, b) pdf times the score, normalised.

    b = 15 (1 - anchor) (1 - removed^c_d), anchor = the mean prediction of the 10
    highest-scored examples: the more is removed, the more the mass moves to easier
    (higher mean prediction) examples. Mean predictions are clipped into (0, 1), where
    the pdf is finite.
    """
    from scipy.stats import beta as beta_distribution

    anchor = mean_p[np.argsort(-scores, kind="stable")[:ANCHORS]].mean()
    b = float(np.clip(BETA_SCALE * (1.0 - anchor) * (1.0 - removed**c_d), 1e-6, BETA_SCALE))
    eps = 1e-6
    weight = beta_distribution.pdf(np.clip(mean_p, eps, 1 - eps), BETA_SCALE + 1 - b, b) * scores
    return weight / weight.sum()


def beta_sample(probabilities: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct examples drawn with `probabilities`; if fewer have mass, all those
    and then the rest in index order (all equally improbable)."""
    support = np.flatnonzero(probabilities > 0)
    if support.size >= count:
        return np.sort(rng.choice(probabilities.size, size=count, replace=False, p=probabilities))
    rest = np.setdiff1d(np.arange(probabilities.size), support)[: count - support.size]
    return np.sort(np.concatenate([support, rest]))


@register
@dataclass
class DUAL(ProxyMethod):
    """DUAL over the eval-mode true-class probability after epochs 1..`horizon` of the proxy.

    `horizon=None` is `horizon_fraction` of the proxy's schedule (official CIFAR setting: the
    first 30 of 200 epochs, 0.15; at least 2), `window=None` a third of the horizon (official:
    10 of 30; within 2..horizon), so that DUAL stays early whatever the schedule's length.
    The official code uses the training-mode outputs seen during each epoch. With
    `sampling=beta` the kept set is drawn by DUAL's Beta sampling (its paper's choice at
    high pruning rates) instead of the top scores.
    """

    name = "dual"
    summary = (
        "mean over sliding windows of J epochs (of the first T) of std(p_y) * (1 - mean(p_y)); "
        "optionally Beta sampling on the mean p_y weighted by the score"
    )
    paper = (
        "Cho et al. Lightweight Dataset Pruning without Full Training via Example Difficulty "
        "and Prediction Uncertainty. ICML 2025"
    )
    direction = "high = uncertain and not yet learned = kept first"
    cost = "one recorded proxy training to epoch T per run; O(N T) to score; Beta sampling O(N)"

    epoch_options = ("horizon",)

    runs: int = 1
    horizon: int | None = None
    horizon_fraction: float = 0.15
    window: int | None = None
    sampling: str = "topk"
    c_d: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window is not None and self.horizon is not None:
            check_window(self.window, self.horizon, WINDOW_MINIMUM)
        if self.sampling not in SAMPLING:
            raise ConfigError(
                f"method.sampling={self.sampling!r} is not one of {', '.join(SAMPLING)}"
            )
        if self.c_d <= 0:
            raise ConfigError(f"method.c_d={self.c_d} must be > 0")

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return sliding_window_epochs(
            self.horizon,
            self.window,
            self.horizon_fraction,
            self.schedule_epochs(ctx),
            WINDOW_MINIMUM,
        )

    def _p_true(self, ctx: ScoreContext, run: int, horizon: int) -> np.ndarray:
        d = dynamics(ctx, self.proxy_spec, run, horizon)
        return np.stack([at_epoch(d, "p_true", e) for e in range(1, horizon + 1)])

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        resolved = self.resolve(ctx)
        return np.stack(
            ctx.map_runs(
                lambda k: dual_scores(self._p_true(ctx, k, resolved.horizon), resolved.window),
                self.runs,
            )
        )

    def select_subset(
        self,
        ctx: ScoreContext,
        scores: np.ndarray,
        spec: PruneSpec,
        seed: int,
        cut_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.sampling == "topk":
            return select(scores, ctx.labels, spec, seed, cut_scores)
        if spec.keep != "hard" or spec.balance or spec.offset or spec.strategy != "topk":
            raise ConfigError(
                "method.sampling=beta draws its own subset: use prune.keep=hard, "
                "prune.balance=false, prune.offset=0, prune.strategy=topk"
            )
        horizon = self.resolve(ctx).horizon
        mean_p = np.mean(
            ctx.map_runs(lambda k: self._p_true(ctx, k, horizon).mean(axis=0), self.runs), axis=0
        )
        probabilities = beta_probabilities(mean_p, scores, spec.fraction, self.c_d)
        count = kept_count(ctx.n, spec.fraction)
        return beta_sample(probabilities, count, np.random.default_rng(seed))
