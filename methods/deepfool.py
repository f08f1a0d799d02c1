"""DeepFool margin (Ducoffe & Precioso 2018), as DeepCore: the smallest adversarial step to flip."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from methods.core.base import ScoreContext
from methods.core.dynamics import (
    OwnWork,
    derived_sufficient,
    own_artifacts,
    prepare_networks,
    proxy_material,
    proxy_network,
    restate_cost,
)
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register


def _input_jacobian(model: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, K] of the normalised inputs z and their gradients [K, B, P] w.r.t. z."""
    z = z.detach().requires_grad_(True)
    logits = model(z)
    rows = [
        torch.autograd.grad(logits[:, c].sum(), z, retain_graph=c + 1 < logits.shape[1])[0]
        for c in range(logits.shape[1])
    ]
    return logits.detach(), torch.stack(rows).flatten(2)


def deepfool_norms(
    body_and_head: nn.Module, z: torch.Tensor, max_iter: int, overshoot: float
) -> torch.Tensor:
    """||r||_2 of DeepFool's perturbation of each input z [B, ...] (the model's own input).

    Each iteration linearises the classifier around the current point and steps to the
    nearest linearised boundary of the originally predicted class p:
    l = argmin_{k != p} |f_k - f_p| / ||w_k - w_p||,
    r_i = |f_l - f_p| / ||w_l - w_p||^2 (w_l - w_p),
    with w = the input gradients; an example stops once z0 + (1 + overshoot) r_tot is
    predicted otherwise, or after `max_iter` iterations (then its accumulated r counts).
    """
    with torch.no_grad():
        original = body_and_head(z).argmax(dim=1)
    total = torch.zeros_like(z).flatten(1)
    active = torch.arange(z.shape[0], device=z.device)
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        point = z[active] + (1 + overshoot) * total[active].view_as(z[active])
        logits, grads = _input_jacobian(body_and_head, point)
        p = original[active]
        rows = torch.arange(active.numel(), device=z.device)
        w = grads - grads[p, rows][None]  # [K, B, P]
        f = (logits - logits[rows, p][:, None]).T  # [K, B]
        w_norm = w.norm(dim=2)
        ratio = f.abs() / w_norm.clamp_min(torch.finfo(w.dtype).tiny)
        ratio[p, rows] = float("inf")
        target = ratio.argmin(dim=0)
        step_len = f.abs()[target, rows] / w_norm[target, rows].pow(2).clamp_min(
            torch.finfo(w.dtype).tiny
        )
        total[active] += step_len[:, None] * w[target, rows]
        with torch.no_grad():
            moved = z[active] + (1 + overshoot) * total[active].view_as(z[active])
            flipped = body_and_head(moved).argmax(dim=1) != p
        active = active[~flipped]
    return (1 + overshoot) * total.norm(dim=1)


class _OnNormalised(nn.Module):
    """The classifier applied to already-normalised inputs (DeepFool perturbs those)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.body(z))


def deepfool_scores(
    model: Classifier,
    blocks: Iterable[torch.Tensor],
    max_iter: int,
    overshoot: float,
    batch_size: int,
) -> np.ndarray:
    """||r||_2 of each raw image (float64) of the blocks [B, C, H, W] in turn, the network
    frozen, eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = _OnNormalised(model).eval()
    norms = []
    for x in blocks:
        for i in range(0, x.shape[0], batch_size):
            z = model.normalize(x[i : i + batch_size])
            norms.append(deepfool_norms(wrapped, z, max_iter, overshoot).cpu())
    return torch.cat(norms).double().numpy()


@register
@dataclass
class DeepFool(ProxyMethod):
    """Norm of the DeepFool perturbation of each normalised training image, eval mode.

    As DeepCore: the perturbation flips the proxy's *prediction* (not the label), in the
    normalised input space, at most `max_iter` (50) iterations, each K input-gradient
    backward passes over a batch of `batch_size`: cost <= max_iter x K backward passes over
    the data (most examples flip within a few). Deviation: the step overshoots by
    `overshoot` (0.02, the DeepFool paper's; DeepCore has none, which can stall exactly on
    the boundary); overshoot=0 is DeepCore's.
    """

    name = "deepfool"
    summary = "-||r||_2 of the minimal DeepFool perturbation that changes the proxy's prediction"
    paper = (
        "Ducoffe, Precioso. Adversarial Active Learning for Deep Networks: a Margin Based "
        "Approach. 2018; DeepFool: Moosavi-Dezfooli et al. CVPR 2016; as in Guo et al. "
        "DeepCore. DEXA 2022"
    )
    direction = "high = smallest perturbation = closest to the decision boundary = kept first"
    cost = (
        "one proxy training per run; at most max_iter x K input-gradient backward passes "
        "per example (most flip within a few)"
    )

    runs: int = 1
    epoch: int | None = None
    max_iter: int = 50
    overshoot: float = 0.02
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_iter < 1 or self.batch_size < 1:
            raise ConfigError(
                f"method.max_iter={self.max_iter} and method.batch_size={self.batch_size} "
                "must be >= 1"
            )
        if self.overshoot < 0:
            raise ConfigError(f"method.overshoot={self.overshoot} must be >= 0")

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        epoch = self._epoch(ctx)
        prepare_networks(
            ctx,
            self.proxy_spec,
            self.runs,
            epoch,
            lambda k: (
                ctx.store.find("deepfool", self._material(ctx, k, epoch), derived_sufficient)
                is not None
            ),
        )
        return np.stack(own_artifacts(ctx, lambda k: -self._norms(ctx, k), self.runs))

    def _epoch(self, ctx: ScoreContext) -> int:
        return self.schedule_epochs(ctx) if self.epoch is None else self.epoch

    def _material(self, ctx: ScoreContext, run: int, epoch: int) -> dict[str, Any]:
        return {
            **proxy_material(ctx, self.proxy_spec, run),
            "epoch": epoch,
            "max_iter": self.max_iter,
            "overshoot": self.overshoot,
        }

    def _norms(self, ctx: ScoreContext, run: int) -> np.ndarray:
        proxy, epoch = self.proxy_spec, self._epoch(ctx)

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            model, cost = proxy_network(ctx, proxy, run, epoch)
            work = OwnWork()
            images = (x for _, x, _ in ctx.eval_batches())
            norms = deepfool_scores(model, images, self.max_iter, self.overshoot, self.batch_size)
            meta = {**cost, **work.meta()}
            return {"deepfool": norms}, meta

        material = self._material(ctx, run, epoch)
        arrays, meta = ctx.store.load_or_compute("deepfool", material, compute, derived_sufficient)
        restate_cost(ctx, meta)
        return arrays["deepfool"]
