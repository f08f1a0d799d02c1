"""GradMatch (Killamsetty et al., ICML 2021): a weighted subset matching the data's gradient."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.train import LossWeights
from methods.core.base import ScoreContext
from methods.core.features import order_scores, picks_needed
from methods.core.last_layer import (
    ClassGradients,
    GradientFactors,
    GradientMethod,
    last_layer_gradients,
    one_blas_thread,
    output_errors,
    split_by_class,
)
from methods.core.registry import register

TARGETS = ("train", "val")


def omp_order(
    gradients: np.ndarray | GradientFactors,
    target: np.ndarray,
    lam: float,
    steps: int | None = None,
) -> np.ndarray:
    """The sequence of DeepCore's orthogonal matching pursuit, A = gradients [n, d].

    Step t picks argmax_{j not picked} <a_j, r> (signed, as DeepCore), then refits
    x = argmin ||A_S^T x - b||^2 + lam ||x||^2 (the first pick: the plain projection,
    as DeepCore) and r = b - A_S^T x. By the push-through identity the ridge residual is
    lam M^-1 b, M = lam I_d + A_S^T A_S; M^-1 is kept by Sherman-Morrison (a symmetric
    rank-one BLAS update of one triangle) and the residual by the same rank-one step, so a
    pick costs one product A r (cheap on `GradientFactors`) and O(d^2), never a refit
    of a |S| x |S| system. `steps` stops after that many picks.
    """
    from scipy.linalg import blas

    n, d = gradients.shape
    picked = np.zeros(n, dtype=bool)
    order = np.empty(n if steps is None else min(steps, n), dtype=np.int64)
    inverse = np.asfortranarray(np.eye(d) / lam)  # upper triangle of M^-1
    target = target.astype(np.float64)
    ridge = target.copy()  # lam M^-1 b
    residual = target
    with one_blas_thread():
        for t in range(order.size):
            projections = gradients @ residual
            projections[picked] = -np.inf
            pick = int(np.argmax(projections))
            order[t], picked[pick] = pick, True
            a = np.asarray(gradients[pick], dtype=np.float64)
            qa = blas.dsymv(1.0, inverse, a)
            scale = 1.0 / (1.0 + a @ qa)
            inverse = blas.dsyr(-scale, qa, a=inverse, overwrite_a=True)
            ridge = ridge - (lam * scale * (qa @ target)) * qa
            if t == 0:
                residual = target - a * (a @ target) / max(a @ a, np.finfo(np.float64).tiny)
            else:
                residual = ridge
    return order


def nonnegative_weights(gradients: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """DeepCore's final weights of a chosen set: nnls((A_S A_S^T + lam I) x = A_S b)."""
    from scipy.optimize import nnls

    system = gradients @ gradients.T + lam * np.eye(gradients.shape[0])
    with one_blas_thread():
        return nnls(system, gradients @ target)[0]


def validation_gradients(outputs: dict[str, np.ndarray], ctx: ScoreContext) -> np.ndarray:
    """Last-layer loss gradients [n_val, K (D + 1)] of the validation split, float64."""
    h = torch.from_numpy(outputs["val_features"]).double()
    errors = output_errors(torch.from_numpy(outputs["val_logits"]).double(), ctx.val_y.cpu())
    return last_layer_gradients(errors, h).numpy()


@register
@dataclass
class GradMatch(GradientMethod):
    """OMP matching each class's mean last-layer gradient, per class; weighted subset.

    As DeepCore (its balance=True default): per class, A = the class's last-layer loss
    gradients, b = their mean (`target=train`) or the class's mean validation gradient
    (`target=val`, needs data.val_size), ridge `lam` (1); the subset trains with the
    non-negative least-squares weights of the kept examples, the batch loss normalised
    by the batch's weights (DeepCore's sum w l / sum w). Deviation: DeepCore drops
    examples whose nnls weight is 0 (its subset is then smaller than the budget); here
    they stay kept with weight 0, so the kept count is the budget's.
    """

    name = "gradmatch"
    summary = (
        "(n_c - rank) / n_c in the orthogonal-matching-pursuit sequence matching the class's "
        "mean last-layer gradient (ridge lam); kept examples weighted by non-negative LS"
    )
    paper = (
        "Killamsetty et al. GRAD-MATCH: Gradient Matching based Data Subset Selection for "
        "Efficient Deep Model Training. ICML 2021; as in Guo et al. DeepCore. DEXA 2022"
    )
    direction = "high = picked earlier by OMP = kept first (keep=hard = the GradMatch subset)"
    cost = (
        "one proxy training per run; per class OMP O(n_c K D + d^2) per pick, up to the "
        "picks the selection reads, d = K (D + 1); weights: an nnls of the kept k_c x k_c system"
    )

    lam: float = 1.0
    target: str = "train"
    batch_normalise: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in TARGETS:
            raise ConfigError(f"method.target={self.target!r} is not one of {', '.join(TARGETS)}")
        if self.lam <= 0:
            raise ConfigError(f"method.lam={self.lam} must be > 0")

    def _classes(
        self, ctx: ScoreContext, run: int, count_cost: bool = True
    ) -> list[tuple[ClassGradients, np.ndarray]]:
        """Each class's gradients with the vector b its subset matches."""
        with_val = self.target == "val"
        outputs = self.outputs(ctx, run, with_val=with_val, count_cost=count_cost)
        groups = split_by_class(outputs["features"], outputs["logits"], ctx)
        if not with_val:
            return [(g, g.gradients().mean(dim=0).cpu().numpy()) for g in groups]
        val_gradients = validation_gradients(outputs, ctx)
        val_labels = ctx.val_y.cpu().numpy()
        matched = []
        for group in groups:
            label = ctx.labels[group.members[0]]
            if not np.any(val_labels == label):
                raise ConfigError(f"class {label} has no validation example: raise data.val_size")
            matched.append((group, val_gradients[val_labels == label].mean(axis=0)))
        return matched

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        scores = np.empty(ctx.n, dtype=np.float64)
        for group, target in self._classes(ctx, run):
            picks = picks_needed(ctx, group.members.size, per_class=True)
            order = omp_order(group.factors(), target, self.lam, picks)
            scores[group.members] = order_scores(order, group.members.size)
        return scores

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights:

        def run_weights(run: int) -> np.ndarray:
            weights = np.zeros(ctx.n, dtype=np.float64)
            for group, target in self._classes(ctx, run, count_cost=False):
                inside = np.flatnonzero(np.isin(group.members, kept))
                if inside.size:
                    gradients = group.gradients().cpu().numpy()[inside]
                    weights[group.members[inside]] = nonnegative_weights(
                        gradients, target, self.lam
                    )
            return weights[kept]

        values = torch.from_numpy(np.mean(ctx.map_runs(run_weights, self.runs), axis=0))
        return LossWeights(values, batch_normalise=self.batch_normalise)
