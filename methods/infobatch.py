"""InfoBatch (Qin et al., ICLR 2024): prune well-learned examples at random each pass, rescale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks.errors import ConfigError
from benchmarks.train import PassSampler
from methods.core.dynamic import DynamicMethod
from methods.core.registry import register

# the official code never keeps less than this share of the well-learned examples
MIN_KEEP_RATIO = 0.1


def annealing_pass(delta: float, passes: int) -> int:
    """First pass on the full data, as the official IBSampler: pass p (0-based) prunes while
    p + 1 <= delta * passes, so the full data starts at floor(delta * passes)."""
    return math.floor(delta * passes)


class InfoBatchSampler(PassSampler):
    """InfoBatch's pass sampler as its official code (NUS-HPC-AI-Lab/InfoBatch, infobatch.py).

    Every pass before the annealing point: of the examples whose last loss is below the
    mean loss ("well learned"), keep exactly floor(keep * count) chosen at random without
    replacement, keep = max(0.1, 1 - ratio), and scale their losses by 1 / keep, so the
    expected gradient is unchanged; from pass floor(delta * passes) on, the full data,
    unweighted (the official code keeps the last weights when delta * passes is not whole:
    its reset fires only at pass delta * passes + 1; here they are reset). Losses start
    at +inf, so the first pass keeps everything.
    """

    def __init__(self, n: int, ratio: float, delta: float) -> None:
        super().__init__(n)
        self.ratio, self.delta = ratio, delta
        self.keep = min(1.0, max(MIN_KEEP_RATIO, 1.0 - ratio))
        self.loss = torch.full((n,), math.inf)
        self.weight = torch.ones(n)

    def choose(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        self.weight.fill_(1.0)
        if pass_no >= annealing_pass(self.delta, passes):
            return torch.arange(self.n)
        finite = torch.isfinite(self.loss)
        if not finite.any():
            return torch.arange(self.n)
        well_learned = torch.nonzero(finite & (self.loss < self.loss[finite].mean())).flatten()
        count = math.floor(self.keep * well_learned.numel())
        kept = well_learned[torch.randperm(well_learned.numel(), generator=gen)[:count]]
        self.weight[kept] = 1.0 / self.keep
        chosen = torch.ones(self.n, dtype=torch.bool)
        chosen[well_learned] = False
        chosen[kept] = True
        return torch.nonzero(chosen).flatten()

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight.to(idx.device)[idx]

    def observe(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        self.loss[idx.cpu()] = losses.float().cpu()


@register
@dataclass
class InfoBatch(DynamicMethod):
    name = "infobatch"
    summary = (
        "each pass, keep a random max(0.1, 1 - fraction) share (an exact count) of the examples "
        "whose loss is below the mean and rescale them by its inverse; full data from pass "
        "floor(delta * passes)"
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
