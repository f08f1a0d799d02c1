"""EL2N (Paul et al., NeurIPS 2021): error L2 norm early in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.base import ScoreContext
from methods.dynamics import at_epoch, dynamics
from methods.proxy_method import ProxyMethod
from methods.registry import register


@register
@dataclass
class EL2N(ProxyMethod):
    """E_w ||softmax(f_w(x)) - onehot(y)||_2 at epoch `epoch`, eval mode, un-augmented images."""

    name = "el2n"
    summary = "mean over proxy runs of ||softmax(f(x)) - onehot(y)||_2 at epoch t (not squared)"
    paper = "Paul, Ganguli, Dziugaite. Deep Learning on a Data Diet. NeurIPS 2021"
    direction = "high = hard = kept first"

    epoch: int = 20

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy = self.proxy_spec
        return np.stack(
            [
                at_epoch(dynamics(ctx, proxy, k, self.epoch), "el2n", self.epoch)
                for k in range(self.runs)
            ]
        )
