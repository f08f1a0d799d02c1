"""Input norm: the baseline that GraNd at initialisation turned out to track."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import register


@register
@dataclass
class InputNorm(PruningMethod):
    name = "input_norm"
    summary = "||x||_2 of the normalised input image (no model, no training)"
    paper = "baseline; see the GraNd-at-initialisation re-examinations of Data Diet"
    direction = "high norm = kept first"

    batch_size: int = 4096

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        mean = torch.tensor(ctx.mean, device=ctx.device).view(1, -1, 1, 1)
        std = torch.tensor(ctx.std, device=ctx.device).view(1, -1, 1, 1)
        norms = []
        for _, images, _ in ctx.eval_batches():
            for start in range(0, images.shape[0], self.batch_size):
                x = images[start : start + self.batch_size].double() / 255.0
                norms.append(((x - mean) / std).flatten(1).norm(dim=1))
        return torch.cat(norms).cpu().numpy()[None]
