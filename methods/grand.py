"""GraNd (Paul et al., NeurIPS 2021): the per-example gradient norm early in training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from methods.core.base import ScoreContext
from methods.core.dynamics import (
    derived_artifact,
    derived_sufficient,
    prepare_networks,
    proxy_material,
    restate_cost,
)
from methods.core.grad_norms import per_example_grad_norms
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import register

PARAMS = ("all", "last_layer")


@register
@dataclass
class GraNd(ProxyMethod):
    """E_w ||grad_w CE(f_w(x), y)||_2 over all parameters, eval-mode BatchNorm, at epoch `epoch`.

    `params=last_layer` is the closed form over the last linear layer only (DeepCore's
    variant); `epoch=0` is GraNd at initialisation, which later work found to track
    the input norm rather than example difficulty. `epoch=None` takes `epoch_fraction` of the
    proxy's schedule (Data Diet: 20 of 200 = 0.1).
    """

    name = "grand"
    summary = (
        "mean over proxy runs of the per-example loss-gradient norm over all parameters at epoch t"
    )
    paper = "Paul, Ganguli, Dziugaite. Deep Learning on a Data Diet. NeurIPS 2021"
    direction = "high = hard = kept first"

    epoch: int | None = None
    epoch_fraction: float = 0.1
    params: str = "all"
    chunk_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.params not in PARAMS:
            raise ConfigError(f"method.params={self.params!r} is not one of {', '.join(PARAMS)}")

    def check(self, ctx: ScoreContext) -> None:
        """The exact norms of two examples on the untrained proxy architecture (its plan
        traced, its replays run), so that a model the closed forms cannot cover is refused
        before any proxy is trained."""
        if self.params != "all" or ctx.n == 0:
            return
        model = ctx.build_model(self.proxy_spec.model, seed=0)
        try:
            first = torch.arange(min(2, ctx.n))
            _, x, y = next(ctx.eval_batches(2, first))
            per_example_grad_norms(model, x, y)
        except NotImplementedError as err:
            raise ConfigError(f"method=grand with method.params=all: {err}") from None

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        return {"epoch": self.early_epoch(ctx, self.epoch, self.epoch_fraction)}

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        resolved = self.resolve(ctx)
        proxy = self.proxy_spec
        prepare_networks(
            ctx,
            proxy,
            self.runs,
            resolved.epoch,
            lambda k: (
                ctx.store.find("grand", resolved._material(ctx, k), derived_sufficient) is not None
            ),
        )
        return np.stack([resolved._run(ctx, k) for k in range(self.runs)])

    def _material(self, ctx: ScoreContext, run: int) -> dict[str, Any]:
        return {
            **proxy_material(ctx, self.proxy_spec, run),
            "epoch": self.epoch,
            "params": self.params,
        }

    def _run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        """Norms of the recorded proxy training's network at `epoch` (no training of its own),
        each rank computing its shard of the examples."""

        def rows(model: Classifier) -> dict[str, torch.Tensor]:
            def norms(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
                values = per_example_grad_norms(
                    model, x, y, params=self.params, chunk_size=self.chunk_size
                )
                return {"grand": values.double()}

            return ctx.sharded_rows(ctx.source, norms)

        arrays, meta = derived_artifact(
            ctx, "grand", self._material(ctx, run), self.proxy_spec, run, self.epoch, rows
        )
        restate_cost(ctx, meta)
        return arrays["grand"]
