"""Per-example gradients of the loss w.r.t. the proxy's last linear layer, as DeepCore uses them.

For cross-entropy through a linear head z = W h + b, example i's gradient is
g_i = [e_i, e_i (x) h_i] with e_i = softmax(z_i) - onehot(y_i): bias part first, then the
weight part row by row (DeepCore's layout). Everything here comes from the cached proxy
features and logits, so no model pass is needed. Inner products never need g itself:
<g_i, g_j> = <e_i, e_j> (1 + <h_i, h_j>), so a class's Gram matrix costs
O(n_c^2 (K + D)) time and 8 n_c^2 bytes (float64) — one class at a time, never N x N.
Deviation: DeepCore's `calc_gradient` (CRAIG, GradMatch, GLISTER, submodular) applies its
criterion to softmax(outputs), i.e. cross-entropy of the probabilities (a second
softmax), so its e is not softmax(z) - onehot(y); here e is the gradient of the
cross-entropy of the logits, the loss the papers and the proxy train with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from methods.core.base import ScoreContext
from methods.core.features import FeatureMethod


def output_errors(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """e = softmax(z) - onehot(y) [n, K]: the loss gradient w.r.t. the logits."""
    return logits.softmax(dim=1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)


def last_layer_gradients(errors: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """g = [e, e (x) h] [n, K (D + 1)], DeepCore's layout (bias gradient first)."""
    weight = (errors[:, :, None] * features[:, None, :]).flatten(1)
    return torch.cat([errors, weight], dim=1)


def gradient_gram(
    errors: torch.Tensor,
    features: torch.Tensor,
    other_errors: torch.Tensor | None = None,
    other_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """<g_i, g_j> = <e_i, e_j> (1 + <h_i, h_j>) between two sets (the same set by default)."""
    if other_errors is None or other_features is None:
        other_errors, other_features = errors, features
    return (errors @ other_errors.T) * (1.0 + features @ other_features.T)


def gram_distances(gram: torch.Tensor) -> torch.Tensor:
    """||g_i - g_j||_2 from the Gram matrix, clipped at 1e-12 before the root as DeepCore."""
    squared = gram.diagonal()[:, None] + gram.diagonal()[None, :] - 2.0 * gram
    return squared.clamp_min(1e-12).sqrt()


def cosine_kernel(gram: torch.Tensor) -> torch.Tensor:
    """0.5 + 0.5 cos(g_i, g_j): DeepCore's similarity for submodular selection, in [0, 1]."""
    norms = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny).sqrt()
    return 0.5 + 0.5 * gram / (norms[:, None] * norms[None, :])


def one_blas_thread() -> threadpool_limits:
    """Holds BLAS to one thread, for greedy loops of many small products (OMP, GLISTER).

    Each pick's products are small (d = 650: microseconds of work per thread), so BLAS
    threads mostly wait for each other; on the shared 2-core CPU that made GradMatch's
    selection of 2,000 random examples take 26 s instead of 2 s (measured).
    """
    return threadpool_limits(limits=1, user_api="blas")


class GradientFactors:
    """The rows g_i = [e_i, e_i (x) h_i] of a gradient matrix [n, K (D + 1)], kept as (e, h).

    Stands in for the explicit matrix where a greedy needs only `A @ v` and single rows
    (OMP, GLISTER): <g_i, v> = e_i . (v_b + V h_i) with v = [v_b, V row by row], so a
    product reads n (K + D) floats instead of n K (D + 1) (11 x fewer for the `cnn`'s
    K = 10, D = 64). The same value as the explicit product up to float rounding.
    """

    def __init__(self, errors: np.ndarray, features: np.ndarray) -> None:
        self.errors = np.ascontiguousarray(errors, dtype=np.float64)
        self.features_t = np.ascontiguousarray(features.T, dtype=np.float64)
        k, (d, n) = self.errors.shape[1], self.features_t.shape
        self.shape = (n, k * (d + 1))

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        k = self.errors.shape[1]
        per_logit = v[k:].reshape(k, -1) @ self.features_t
        per_logit += v[:k, None]
        per_logit *= self.errors.T
        return per_logit.sum(axis=0)

    def __getitem__(self, i: int) -> np.ndarray:
        e = self.errors[i]
        return np.concatenate([e, np.outer(e, self.features_t[:, i]).ravel()])


@dataclass
class ClassGradients:
    """One class's examples (positions in the training set) and their gradient factors."""

    members: np.ndarray
    errors: torch.Tensor
    features: torch.Tensor

    def gram(self) -> torch.Tensor:
        return gradient_gram(self.errors, self.features)

    def gradients(self) -> torch.Tensor:
        return last_layer_gradients(self.errors, self.features)

    def factors(self) -> GradientFactors:
        return GradientFactors(self.errors.cpu().numpy(), self.features.cpu().numpy())


@dataclass
class GradientMethod(FeatureMethod):
    """A method on last-layer gradients of the proxy at `epoch`, one class at a time."""

    def class_gradients(
        self, ctx: ScoreContext, run: int, count_cost: bool = True
    ) -> list[ClassGradients]:
        """Per class: members and float64 (e, h) on the context's device."""
        outputs = self.outputs(ctx, run, count_cost=count_cost)
        return split_by_class(outputs["features"], outputs["logits"], ctx)


def split_by_class(features: np.ndarray, logits: np.ndarray, ctx: ScoreContext) -> list:
    """ClassGradients of every class present in the training labels, in label order."""
    h = torch.from_numpy(features).to(ctx.device, torch.float64)
    z = torch.from_numpy(logits).to(ctx.device, torch.float64)
    errors = output_errors(z, ctx.train_y.to(ctx.device))
    labels = ctx.labels
    groups = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        index = torch.from_numpy(members).to(ctx.device)
        groups.append(ClassGradients(members, errors[index], h[index]))
    return groups
