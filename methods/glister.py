"""GLISTER (Killamsetty et al., AAAI 2021): greedy validation-loss decrease under a Taylor step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import ScoreContext
from methods.core.features import order_scores, picks_needed
from methods.core.last_layer import GradientFactors, GradientMethod, one_blas_thread, split_by_class
from methods.core.registry import register


def validation_gradient(
    logits: np.ndarray, features: np.ndarray, onehot: np.ndarray, step: np.ndarray
) -> np.ndarray:
    """Mean validation loss gradient [K (D + 1)] after the last layer moved by -step.

    step = [db, dW row by row]: logits z_v - db - dW h_v, as DeepCore's update.
    """
    k = logits.shape[1]
    moved = logits - step[:k][None, :] - features @ step[k:].reshape(k, -1).T
    moved = np.exp(moved - moved.max(axis=1, keepdims=True))
    errors = moved / moved.sum(axis=1, keepdims=True) - onehot
    bias = errors.mean(axis=0)
    weight = errors.T @ features / features.shape[0]
    return np.concatenate([bias, weight.ravel()])


def glister_order(
    gradients: np.ndarray | GradientFactors,
    val_logits: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    eta: float,
    steps: int | None = None,
) -> np.ndarray:
    """The whole greedy sequence: pick argmax_e <g_e, grad L_val(theta_S)>, then update theta_S.

    <g_e, grad L_val(theta_S)> is the first-order decrease of the validation loss when
    theta_S takes a step -eta g_e (divided by eta); theta_S = theta_0 - eta mean_{s in S} g_s
    (DeepCore's update; training gradients stay at theta_0). Exact greedy: every gain is
    recomputed each step, one product A v (n (K + D) floats read on `GradientFactors`)
    and O(n_val K D) per pick. `steps` stops after that many picks.
    """
    n = gradients.shape[0]
    onehot = np.eye(val_logits.shape[1])[val_labels]
    picked = np.zeros(n, dtype=bool)
    total = np.zeros(gradients.shape[1])
    order = np.empty(n if steps is None else min(steps, n), dtype=np.int64)
    with one_blas_thread():
        for t in range(order.size):
            step = eta * total / max(t, 1)
            gains = gradients @ validation_gradient(val_logits, val_features, onehot, step)
            gains[picked] = -np.inf
            pick = int(gains.argmax())
            order[t], picked[pick] = pick, True
            total += gradients[pick]
    return order


@register
@dataclass
class Glister(GradientMethod):
    """GLISTER-ONLINE's greedy on last-layer gradients, per class, against the validation split.

    As DeepCore (balance=True default): per class, the class's training gradients against
    its validation examples, eta = the proxy's learning rate unless set. Deviations:
    DeepCore's call misspells `update_state`, so its validation gradient is never updated
    and its greedy is a static ranking; here the update runs, with exact (not lazy)
    greedy since the objective is not submodular. Needs data.val_size > 0.
    """

    name = "glister"
    summary = (
        "(n_c - rank) / n_c in the greedy sequence maximising <g_e, grad L_val> after a "
        "one-step Taylor update of the last layer on the picks so far, per class"
    )
    paper = (
        "Killamsetty et al. GLISTER: Generalization based Data Subset Selection for Efficient "
        "and Robust Learning. AAAI 2021; as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier (most validation-loss decrease) = kept first"
    cost = (
        "one proxy training per run; exact greedy O(n_c K D + n_val,c K D) per pick, up to "
        "the picks the selection reads, per class"
    )

    eta: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and self.eta <= 0:
            raise ConfigError(f"method.eta={self.eta} must be > 0")

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        outputs = self.outputs(ctx, run, with_val=True)
        eta = self.eta if self.eta is not None else ctx.proxy_settings(self.proxy_spec.epochs).lr
        val_h = outputs["val_features"].astype(np.float64)
        val_z = outputs["val_logits"].astype(np.float64)
        val_y = ctx.val_y.cpu().numpy()
        scores = np.empty(ctx.n, dtype=np.float64)
        for group in split_by_class(outputs["features"], outputs["logits"], ctx):
            label = int(ctx.labels[group.members[0]])
            mine = val_y == label
            if not mine.any():
                raise ConfigError(f"class {label} has no validation example: raise data.val_size")
            picks = picks_needed(ctx, group.members.size, per_class=True)
            val = (val_z[mine], val_h[mine], val_y[mine])
            order = glister_order(group.factors(), *val, eta, picks)
            scores[group.members] = order_scores(order, group.members.size)
        return scores
