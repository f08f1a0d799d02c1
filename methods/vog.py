"""VoG (Agarwal, D'souza, Hooker, CVPR 2022): variance of input gradients across checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from methods.core.base import ScoreContext
from methods.core.dynamics import (
    OwnWork,
    derived_sufficient,
    own_artifacts,
    prepare_networks,
    proxy_key,
    proxy_material,
    read_network,
    recorded_run,
    restate_cost,
)
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register


def true_logit_input_gradients(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """d z_y / d input [N, H, W], averaged over colour channels, eval mode.

    z_y is the pre-softmax logit of the label; the input is the normalised image the
    model's body sees.
    """
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        z = model.normalize(x[i : i + batch_size]).requires_grad_(True)
        logits = model.head(model.body(z))
        chosen = logits.gather(1, y[i : i + batch_size, None]).sum()
        (grad,) = torch.autograd.grad(chosen, z)
        out.append(grad.double().mean(dim=1))
    model.train(was_training)
    return torch.cat(out)


class GradientMoments:
    """Running per-pixel mean and squared deviations over checkpoints (Welford)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, grads: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = grads.clone(), torch.zeros_like(grads)
            return
        delta = grads - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (grads - self.mean)

    def vog(self) -> torch.Tensor:
        """Mean over pixels of sqrt(1/K sum_t (g_t - mean_t g)^2): the paper's VoG [N]."""
        return (self.m2 / self.count).sqrt().flatten(1).mean(dim=1)


def class_normalised(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(v - mean_c) / std_c within each class c (population std), as the paper."""
    out = np.empty_like(values, dtype=np.float64)
    for label in np.unique(labels):
        members = labels == label
        spread = values[members].std()
        out[members] = (values[members] - values[members].mean()) / (spread if spread > 0 else 1.0)
    return out


@register
@dataclass
class VoG(ProxyMethod):
    """VoG over the proxy's checkpoints after each of its epochs 1..`horizon`.

    The checkpoints are the recorded proxy training's networks after each epoch (no
    training of its own). Deviations: the checkpoints are the end of every proxy epoch up
    to `horizon` (the paper takes K checkpoints spread over a full training); gradients
    are w.r.t. the normalised input.
    """

    name = "vog"
    summary = (
        "class-normalised mean over pixels of the std over checkpoints of d logit_y / d input "
        "(channel-averaged)"
    )
    paper = (
        "Agarwal, D'souza, Hooker. Estimating Example Difficulty using Variance of Gradients. "
        "CVPR 2022"
    )
    direction = "high = input gradients vary across training = hard = kept first"
    cost = (
        "the recorded proxy training with its network kept at every epoch, plus one "
        "input-gradient pass over the data per epoch; 2 N H W floats of running moments"
    )

    runs: int = 1
    horizon: int | None = None
    batch_size: int = 256

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        end = self._end(ctx)
        prepare_networks(
            ctx,
            self.proxy_spec,
            self.runs,
            end,
            lambda k: (
                ctx.store.find("vog", self._material(ctx, k, end), derived_sufficient) is not None
            ),
            weights_at=tuple(range(1, end + 1)),
        )
        return np.stack(own_artifacts(ctx, lambda k: self._run(ctx, k), self.runs))

    def _end(self, ctx: ScoreContext) -> int:
        return self.schedule_epochs(ctx) if self.horizon is None else self.horizon

    def _material(self, ctx: ScoreContext, run: int, end: int) -> dict[str, Any]:
        return {**proxy_material(ctx, self.proxy_spec, run), "horizon": end, "output": "vog"}

    def _run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        proxy, end = self.proxy_spec, self._end(ctx)

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            epochs = tuple(range(1, end + 1))
            recorded, recording, files = recorded_run(ctx, proxy, run, end, weights_at=epochs)
            work = OwnWork()
            moments = GradientMoments()
            for epoch in epochs:
                model = ctx.build_model(proxy.model, 0)
                model.load_state_dict(
                    read_network(
                        ctx,
                        files,
                        epoch,
                        lambda: recorded_run(ctx, proxy, run, end, weights_at=epochs),
                    )
                )
                moments.add(
                    torch.cat(
                        [
                            true_logit_input_gradients(model, x, y, self.batch_size)
                            for _, x, y in ctx.eval_batches()
                        ]
                    )
                )
            (row,) = np.flatnonzero(recorded["epochs"] == end)
            meta = {
                "proxy": proxy_key(ctx, proxy, run),
                "proxy_epoch": end,
                "proxy_seconds": float(recorded["seconds"][row]),
                "proxy_passes": recording["passes"][str(end)],
                **work.meta(),
            }
            return {"vog": moments.vog().cpu().numpy()}, meta

        material = self._material(ctx, run, end)
        arrays, meta = ctx.store.load_or_compute("vog", material, compute, derived_sufficient)
        restate_cost(ctx, meta)
        return class_normalised(arrays["vog"], ctx.labels)
