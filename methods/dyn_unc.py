"""Dynamic uncertainty (He et al., CVPR 2024): how much the true-class probability wavers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register


def dynamic_uncertainty(p_true: np.ndarray, window: int) -> np.ndarray:
    """U = 1/(K-J+1) sum_{k=0}^{K-J} std_{j<J}(P(y|x, theta_k+j)) over p_true [K, N].

    The std is the sample std (J - 1 in the denominator), as the paper and its code.
    """
    windows = np.lib.stride_tricks.sliding_window_view(p_true, window, axis=0)
    return windows.std(axis=-1, ddof=1).mean(axis=0)


@register
@dataclass
class DynUnc(ProxyMethod):
    """Dynamic uncertainty over the whole proxy training, windows of `window` epochs.

    P(y|x, theta_k) is the eval-mode true-class probability after epoch k = 1..K
    (the initialisation is left out: it has not seen the data).
    """

    name = "dyn_unc"
    summary = (
        "mean over sliding windows of J epochs of the std of the true-class probability "
        "within the window, over the proxy training"
    )
    paper = "He et al. Large-scale Dataset Pruning with Dynamic Uncertainty. CVPR 2024 Workshops"
    direction = "high = uncertain = kept first"

    runs: int = 1
    window: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 2:
            raise ConfigError(f"method.window={self.window} must be >= 2 for a std")

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        end = ctx.proxy_settings(proxy.epochs).epochs
        if self.window > end:
            raise ConfigError(
                f"method.window={self.window} is longer than the proxy's {end} epochs"
            )

        def run(k: int) -> np.ndarray:
            d = dynamics(ctx, proxy, k, end)
            p_true = np.stack([at_epoch(d, "p_true", e) for e in range(1, end + 1)])
            return dynamic_uncertainty(p_true, self.window)

        return np.stack(ctx.map_runs(run, self.runs))
