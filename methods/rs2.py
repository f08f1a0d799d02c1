"""RS2 (Okanovic et al., 2023): repeated random sampling, without replacement across passes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.train import PassSampler
from methods.core.dynamic import DynamicMethod
from methods.core.registry import register
from methods.core.select import kept_count


class RS2Sampler(PassSampler):
    """Each pass takes the next `size` examples of a shuffled order of the whole set.

    When the order runs out, the rest is taken and a fresh shuffle continues it, so every
    example is seen once before any is seen twice.
    """

    def __init__(self, n: int, size: int) -> None:
        super().__init__(n)
        self.size = size
        self.queue = torch.empty(0, dtype=torch.long)

    def choose(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        while self.queue.numel() < self.size:
            self.queue = torch.cat([self.queue, torch.randperm(self.n, generator=gen)])
        chosen, self.queue = self.queue[: self.size], self.queue[self.size :]
        return chosen

    def observe(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        """RS2 ignores losses: the subset is random by design."""


@register
@dataclass
class RS2(DynamicMethod):
    name = "rs2"
    summary = (
        "a fresh uniform random subset of (1 - fraction) N examples every pass, "
        "without replacement across passes"
    )
    paper = (
        "Okanovic et al. Repeated Random Sampling for Minimizing the Time-to-Accuracy "
        "of Learning. 2023"
    )
    direction = "none: random; dynamic, so keep=hard/easy does not apply"

    def sampler(self, n: int, fraction: float) -> PassSampler:
        return RS2Sampler(n, kept_count(n, fraction))
