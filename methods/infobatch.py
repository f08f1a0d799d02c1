"""InfoBatch (Qin et al., ICLR 2024): prune well-learned examples at random each pass, rescale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks.errors import ConfigError
from benchmarks.train import PassSampler
from methods.dynamic import DynamicMethod
from methods.registry import register


class InfoBatchSampler(PassSampler):
    """Every pass before the annealing point: of the examples whose last loss is below the
    mean loss, drop each with probability `ratio` and scale the loss of the kept ones by
    1 / (1 - ratio), so the expected gradient is unchanged; from pass ceil(delta * passes)
    on, train on the full data. Losses start at +inf, so the first pass keeps everything.
    """

    def __init__(self, n: int, ratio: float, delta: float) -> None:
        super().__init__(n)
        self.ratio, self.delta = ratio, delta
        self.loss = torch.full((n,), math.inf)
        self.weight = torch.ones(n)

    def choose(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        self.weight.fill_(1.0)
        if pass_no >= math.ceil(self.delta * passes):
            return torch.arange(self.n)
        finite = torch.isfinite(self.loss)
        if not finite.any():
            return torch.arange(self.n)
        well_learned = finite & (self.loss < self.loss[finite].mean())
        dropped = well_learned & (torch.rand(self.n, generator=gen) < self.ratio)
        self.weight[well_learned & ~dropped] = 1.0 / (1.0 - self.ratio)
        return torch.nonzero(~dropped).flatten()

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight.to(idx.device)[idx]

    def observe(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        self.loss[idx.cpu()] = losses.float().cpu()


@register
@dataclass
class InfoBatch(DynamicMethod):
    name = "infobatch"
    summary = (
        "each pass, drop a random `fraction` of the examples whose loss is below the mean, "
        "rescale the kept ones; full data after `delta` of the passes"
    )
    paper = (
        "Qin et al. InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data Pruning. "
        "ICLR 2024"
    )
    direction = (
        "none: dynamic; prune.fraction is InfoBatch's ratio r, the actual pruned share is recorded"
    )

    delta: float = 0.875

    def __post_init__(self) -> None:
        if not 0.0 < self.delta <= 1.0:
            raise ConfigError(f"method.delta={self.delta} is outside (0, 1]")

    def sampler(self, n: int, fraction: float) -> PassSampler:
        return InfoBatchSampler(n, fraction, self.delta)
