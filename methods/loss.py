"""Loss at epoch t: the cross-entropy of the proxy's prediction, the plainest difficulty score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.base import ScoreContext
from methods.core.dynamics import at_epoch, dynamics
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register


def loss_from_p_true(p_true: np.ndarray) -> np.ndarray:
    """-log p(y|x): the cross-entropy, from the recorded true-class probability."""
    return -np.log(np.clip(p_true, np.finfo(np.float64).tiny, 1.0))


@register
@dataclass
class Loss(ProxyMethod):
    """E_w[-log softmax(f_w(x))_y] at epoch `epoch`, eval mode, un-augmented images.

    `epoch=None` is `epoch_fraction` of the proxy's schedule, as EL2N. Read from the
    recorded proxy training's true-class probability (stored in float32,
    so losses below ~6e-8 are indistinguishable: they rank as the easiest).
    """

    name = "loss"
    summary = "mean over proxy runs of the cross-entropy -log p(y|x) at epoch t"
    paper = (
        "the loss baseline of score-based pruning, e.g. Paul, Ganguli, Dziugaite. Deep Learning "
        "on a Data Diet. NeurIPS 2021 (EL2N and GraNd bound it)"
    )
    direction = "high = hard = kept first"
    cost = "one recorded proxy training to epoch t per run; reading it is O(N)"

    epoch: int | None = None
    epoch_fraction: float = 0.1

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return {"epoch": self.early_epoch(ctx, self.epoch, self.epoch_fraction)}

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        proxy, epoch = self.proxy_spec, self.resolve(ctx).epoch
        return np.stack(
            ctx.map_runs(
                lambda k: loss_from_p_true(
                    at_epoch(dynamics(ctx, proxy, k, epoch), "p_true", epoch)
                ),
                self.runs,
            )
        )
