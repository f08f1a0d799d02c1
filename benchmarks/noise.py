"""Synthetic label noise, recorded, so that noisy-label detection can be measured."""

from __future__ import annotations

import torch

from benchmarks.errors import ConfigError


def flip_labels(
    labels: torch.Tensor, fraction: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel a seeded `fraction` of examples to a different class, uniformly at random.

    Returns the noisy labels and the sorted indices that were flipped; the true labels
    of those are `labels[flipped]`.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.label_noise={fraction} is outside [0, 1)")
    n = labels.shape[0]
    gen = torch.Generator().manual_seed(seed)
    flipped = torch.randperm(n, generator=gen)[: round(fraction * n)].sort().values
    shift = torch.randint(1, num_classes, (flipped.numel(),), generator=gen)
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped
