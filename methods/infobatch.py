"""InfoBatch (Qin et al., ICLR 2024): prune well-learned examples at random each pass, rescale."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.errors import ConfigError
from benchmarks.train import PassSampler
from methods.core.base import ScoreContext
from methods.core.dynamic import DynamicMethod
from methods.core.registry import register

# the official code never keeps less than this share of the well-learned examples
MIN_KEEP_RATIO = 0.1
MODES = ("paper", "target")


def reachable(ratio: float, delta: float, epochs: int, budget: str) -> bool:
    """Whether target mode can remove `ratio` of the examples of the run's passes: at most
    90% of the data in each pruning pass but the first (whose losses are not known yet).

    Budget `epochs`: `epochs` passes, the full data from pass floor(delta * epochs) as the
    paper. Budget `iterations`: the steps are the full data's, so removing a share r makes
    about epochs / (1 - r) passes, the last (1 - delta) of the steps on the full data.
    """
    if budget == "epochs":
        passes, pruning = float(epochs), annealing_pass(delta, epochs) - 1
    else:
        passes = epochs / (1 - ratio)
        pruning = passes - (1 - delta) * epochs - 1
    return ratio * passes <= (1 - MIN_KEEP_RATIO) * max(0.0, pruning) + 1e-9


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

    With `target`, the ratio is the share of the examples of the run's passes to remove,
    all passes counted (the unpruned first and annealing passes too): each pruning pass
    removes what is still owed, spread over the pruning passes left (`_to_remove`); the
    candidates are the well-learned examples, or, when removing the ratio of them is not
    enough, the lowest-loss examples that are (`_candidates`: the threshold rises, the
    pruning probability stays the paper's); an exact count of them is removed at random
    and the kept ones' losses are scaled by candidates / kept, so the expected gradient is
    still unchanged. Under a step budget (`iterations`: the full data's steps, not fewer)
    every weight of the pass is also multiplied by its share of the data, so that each
    step's expected gradient is the full data's mean, not 1 / share times it (the paper's
    scaling assumes the fewer steps of its epochs budget; without this, removing 70% of an
    iterations run multiplies the learning rate by about 3 and the MLP of the CPU study
    diverges).
    """

    def __init__(
        self,
        n: int,
        ratio: float,
        delta: float,
        target: bool = False,
        budget: str = "epochs",
    ) -> None:
        super().__init__(n)
        self.ratio, self.delta, self.target, self.budget = ratio, delta, target, budget
        self.total_steps: int | None = None  # the run's step budget (iterations), once known
        self.keep = min(1.0, max(MIN_KEEP_RATIO, 1.0 - ratio))
        self.loss = torch.full((n,), math.inf)
        self.weight = torch.ones(n)

    def choose(self, pass_no: int, passes: int, gen: torch.Generator) -> torch.Tensor:
        self.weight.fill_(1.0)
        if self.target and self.budget == "iterations" and self.total_steps is None:
            self.total_steps = self.steps_left
        remove = self._to_remove(pass_no, passes) if self.target else 0
        if remove is None or (not self.target and pass_no >= annealing_pass(self.delta, passes)):
            return torch.arange(self.n)  # annealing: the full data
        finite = torch.isfinite(self.loss)
        if not finite.any():
            return torch.arange(self.n)
        well_learned = torch.nonzero(finite & (self.loss < self.loss[finite].mean())).flatten()
        if self.target:
            candidates, count = self._candidates(well_learned, finite, remove)
            scale = candidates.numel() / max(count, 1)
        else:
            candidates, count = well_learned, math.floor(self.keep * well_learned.numel())
            scale = 1.0 / self.keep
        kept = candidates[torch.randperm(candidates.numel(), generator=gen)[:count]]
        self.weight[kept] = scale
        chosen = torch.ones(self.n, dtype=torch.bool)
        chosen[candidates] = False
        chosen[kept] = True
        chosen = torch.nonzero(chosen).flatten()
        if self.target and self.budget == "iterations":
            self.weight *= chosen.numel() / self.n
        return chosen

    def _to_remove(self, pass_no: int, epochs: int) -> int | None:
        """Target mode: how many examples this pass removes (None: it is an annealing pass).

        Budget `epochs`: what is still owed of ratio * epochs * n, over the pruning passes
        left. Budget `iterations`: the last (1 - delta) of the steps are full passes; with S
        steps left (S_p of them before the annealing), k more pruned passes removing r each
        (ceil((n - r) / B) steps apiece) end the run after P + k + (S - k steps) / ceil(n / B)
        passes: this pass removes the r of the k whose passes fill S_p best while the run's
        removals come to ratio times its passes.
        """
        n, ratio = self.n, self.ratio
        removed = self.passes * n - self.presented  # every earlier pass is complete
        if self.budget == "epochs" or self.steps_left is None:
            anneal = annealing_pass(self.delta, epochs)
            if pass_no >= anneal:
                return None
            return max(0, round((ratio * epochs * n - removed) / (anneal - pass_no)))
        steps, batch = self.steps_left, self.batch_size
        full_steps = math.ceil(n / batch)
        pruning_steps = steps - (self.total_steps - math.floor(self.delta * self.total_steps))
        if pruning_steps <= 0:
            return None
        best: tuple[float, int] | None = None
        for k in range(1, pruning_steps + 1):
            # removed + k r = ratio n (P + k + (steps - k (n - r) / B) / full_steps), for r
            slope = k * (1 - ratio * n / (batch * full_steps))
            owed = ratio * n * (self.passes + k + steps / full_steps) - removed
            r = (owed - ratio * n * k * n / (batch * full_steps)) / slope
            if not 0 <= r <= n:
                continue
            miss = abs(k * math.ceil((n - round(r)) / batch) - pruning_steps)
            if best is None or miss < best[0]:
                best = (miss, round(r))
        return 0 if best is None else best[1]

    def _candidates(
        self, well_learned: torch.Tensor, finite: torch.Tensor, remove: int
    ) -> tuple[torch.Tensor, int]:
        """Target mode's candidates for removing `remove` this pass, and how many to keep.

        The paper's pruning probability (the ratio) is kept where it can be, so that the
        rescaling stays the paper's 1 / (1 - ratio): fewer removals than the ratio of the
        well-learned lower the probability; more raise the threshold instead, the
        candidates becoming the remove / ratio lowest losses; past the whole data, the
        probability rises, to at most 90%.
        """
        probability = max(self.ratio, 1e-12)
        if remove <= probability * well_learned.numel():
            candidates = well_learned
        else:
            lowest = torch.nonzero(finite).flatten()
            lowest = lowest[torch.argsort(self.loss[lowest], stable=True)]
            candidates = lowest[: min(lowest.numel(), math.ceil(remove / probability))]
        remove = min(remove, math.floor((1 - MIN_KEEP_RATIO) * candidates.numel()))
        return candidates, candidates.numel() - remove

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
        "none: dynamic; prune.fraction is InfoBatch's ratio r (mode=paper) or the share of "
        "presentations to remove (mode=target); the actual pruned share is recorded"
    )

    delta: float = 0.875
    mode: str = "paper"

    def __post_init__(self) -> None:
        if not 0.0 < self.delta <= 1.0:
            raise ConfigError(f"method.delta={self.delta} is outside (0, 1]")
        if self.mode not in MODES:
            raise ConfigError(f"method.mode={self.mode!r} is not one of {', '.join(MODES)}")
        self._budget = "epochs"  # the trainer's, once check_schedule has seen it

    def check_schedule(self, train_cfg: Mapping[str, Any]) -> None:
        self._budget = str(train_cfg["budget"])

    def check(self, ctx: ScoreContext) -> None:
        if self.mode != "target" or ctx.prune is None:
            return
        epochs, budget = int(ctx.train_cfg["epochs"]), str(ctx.train_cfg["budget"])
        if not reachable(ctx.prune.fraction, self.delta, epochs, budget):
            raise ConfigError(
                f"prune.fraction={ctx.prune.fraction:g} is out of method.mode=target's reach "
                f"with train.epochs={epochs}, train.budget={budget} and method.delta="
                f"{self.delta:g}: at most 90% of the data can go in each pruning pass but the "
                "first; train more epochs, prune less or raise method.delta"
            )

    def sampler(self, n: int, fraction: float) -> PassSampler:
        target = self.mode == "target"
        return InfoBatchSampler(n, fraction, self.delta, target, self._budget)
