"""EL2N (Paul et al., NeurIPS 2021): error L2 norm early in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register

# datadiet: eval-mode EL2N at one epoch; ccs: CCS's generate_importance_score.py EL2N, the sum
# of the train-mode (augmented) EL2N over the first `ccs_epochs` epochs of its training log
VARIANTS = ("datadiet", "ccs")


@register
@dataclass
class EL2N(ProxyMethod):
    """E_w ||softmax(f_w(x)) - onehot(y)||_2 at epoch `epoch`, eval mode, un-augmented images.

    `epoch=None` takes `epoch_fraction` of the proxy's schedule (Data Diet: 20 of 200 = 0.1),
    so that the default stays early in training whatever the schedule's length.
    `variant=ccs` is CCS's EL2N: the sum over the first `ccs_epochs` epochs of the train-mode
    EL2N of each presentation (its official generate_importance_score.py, max_epoch=10).
    """

    name = "el2n"
    summary = "mean over proxy runs of ||softmax(f(x)) - onehot(y)||_2 at epoch t (not squared)"
    paper = "Paul, Ganguli, Dziugaite. Deep Learning on a Data Diet. NeurIPS 2021"
    direction = "high = hard = kept first"

    epoch: int | None = None
    epoch_fraction: float = 0.1
    variant: str = "datadiet"
    ccs_epochs: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ConfigError(
                f"method.variant={self.variant!r} is not one of {', '.join(VARIANTS)}"
            )
        if self.ccs_epochs < 1:
            raise ConfigError(f"method.ccs_epochs={self.ccs_epochs} must be >= 1")

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        if self.variant == "ccs":
            return {}
        return {"epoch": self.early_epoch(ctx, self.epoch, self.epoch_fraction)}

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        if self.variant == "ccs":
            end = self.ccs_epochs
            return np.stack(
                ctx.map_runs(
                    lambda k: at_epoch(dynamics(ctx, proxy, k, end), "train_el2n_cum", end),
                    self.runs,
                )
            )
        epoch = self.resolve(ctx).epoch
        return np.stack(
            ctx.map_runs(
                lambda k: at_epoch(dynamics(ctx, proxy, k, epoch), "el2n", epoch), self.runs
            )
        )
