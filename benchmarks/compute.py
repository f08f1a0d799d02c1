"""Compute counted in example-passes: a cell's cost on an axis that does not depend on the machine.

Every network of the benchmark is a `Classifier`, and it counts what goes through it:
the examples that go forward through its body, and the examples whose gradient comes
back through it (a hook on the gradient of its penultimate features). Counts are kept
per network with that network's forward FLOPs per example (torch's FLOP counter), so
that a smaller proxy's passes convert into passes of the trained network.

The unit: one example forward and backward through the trained network. A forward
alone is a third of it: a backward costs about twice the forward's FLOPs (Kaplan et
al. 2020, "Scaling Laws for Neural Language Models": C ~ 6N per training token, 2N of
them the forward pass).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

UNIT = (
    "example-passes: one example forward and backward through the trained network "
    "(a forward alone counts 1/3; another network's passes scale by its forward FLOPs)"
)
FORWARD_SHARE = 1.0 / 3.0


@dataclass
class Tally:
    """Example-passes per network: {network: [forward, backward]}, and each network's
    forward FLOPs per example (where measured)."""

    passes: dict[str, list[int]] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)

    def add(self, network: str, forward: int = 0, backward: int = 0) -> None:
        counts = self.passes.setdefault(network, [0, 0])
        counts[0] += int(forward)
        counts[1] += int(backward)

    def copy(self) -> Tally:
        return Tally({k: list(v) for k, v in self.passes.items()}, dict(self.flops))

    def __add__(self, other: Tally) -> Tally:
        out = self.copy()
        for network, (forward, backward) in other.passes.items():
            out.add(network, forward, backward)
        out.flops.update(other.flops)
        return out

    def __sub__(self, other: Tally) -> Tally:
        """What was counted since `other` was taken (both from the same running count)."""
        out = Tally(flops=dict(self.flops))
        for network, (forward, backward) in self.passes.items():
            before = other.passes.get(network, [0, 0])
            if forward - before[0] or backward - before[1]:
                out.add(network, forward - before[0], backward - before[1])
        return out

    def units(self, reference: str) -> float:
        """Total in example-passes of the `reference` network (see the module's unit)."""
        total = 0.0
        for network, (forward, backward) in self.passes.items():
            total += (forward * FORWARD_SHARE + backward * (1 - FORWARD_SHARE)) * self.scale(
                network, reference
            )
        return total

    def scale(self, network: str, reference: str) -> float:
        """One example-pass of `network` in example-passes of `reference`."""
        if network == reference:
            return 1.0
        if network not in self.flops or reference not in self.flops:
            missing = [n for n in (network, reference) if n not in self.flops]
            raise ValueError(f"no FLOP count of network {', '.join(missing)} to convert passes")
        return self.flops[network] / self.flops[reference]

    def as_record(self) -> dict[str, dict[str, int]]:
        return {
            network: {
                "forward": forward,
                "backward": backward,
                **({"forward_flops": self.flops[network]} if network in self.flops else {}),
            }
            for network, (forward, backward) in sorted(self.passes.items())
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Mapping[str, int]] | None) -> Tally:
        out = cls()
        for network, row in (record or {}).items():
            out.add(network, row.get("forward", 0), row.get("backward", 0))
            if "forward_flops" in row:
                out.flops[network] = int(row["forward_flops"])
        return out


COUNT = Tally()  # the process's running count; stages and artifacts take differences of it


def snapshot() -> Tally:
    """A copy of the running count, to subtract from a later one."""
    return COUNT.copy()


def network_id(
    name: str,
    options: Mapping[str, Any],
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
) -> str:
    """A readable identity of a network's shape: what its FLOPs per example depend on."""
    opts = json.dumps(dict(options), sort_keys=True, separators=(",", "="), default=str)
    size = "x".join(str(int(s)) for s in (in_channels, *image_size))
    return f"{name}{opts if options else ''}@{size}->{num_classes}"


def measure_flops(network: str, model: nn.Module, example: torch.Tensor) -> None:
    """Forward FLOPs of one example (eval mode, state unchanged), once per network."""
    if network in COUNT.flops:
        return
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(training)
    COUNT.flops[network] = int(counter.get_total_flops())


def count_forward(network: str, n: int, features: torch.Tensor) -> None:
    """`n` examples went forward; when their gradient comes back through `features`, count
    a backward of `n` examples (each time it does: DeepFool's per-class gradients)."""
    if torch.compiler.is_compiling():
        return
    COUNT.add(network, forward=n)
    if features.requires_grad:
        features.register_hook(lambda grad: COUNT.add(network, backward=n))
