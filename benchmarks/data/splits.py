"""Stratified splits with exact per-class quotas, seeded."""

from __future__ import annotations

import numbers

import torch

from benchmarks.errors import ConfigError


def stratified_split(
    labels: torch.Tensor, size: int | float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, part) sorted indices; `part` keeps each class's share of the labels.

    Per-class counts use largest-remainder rounding (ties to the lower class), so the
    part has exactly the size asked; which examples of a class go to it is seeded.
    """
    labels = labels.reshape(-1).cpu()
    n = labels.numel()
    k = _part_size(size, n)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = _largest_remainder(counts, k)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    grouped = perm[torch.sort(inverse[perm], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts.repeat_interleave(counts)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[grouped[rank < quota.repeat_interleave(counts)]] = True
    return torch.nonzero(~chosen).flatten(), torch.nonzero(chosen).flatten()


def _part_size(size: object, n: int) -> int:
    allowed = f"use an integer in [1, {n - 1}] or a fraction in (0, 1) of the {n} examples"
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        k = int(size)
    elif isinstance(size, numbers.Real) and not isinstance(size, bool) and 0 < size < 1:
        k = round(float(size) * n)
    else:
        raise ConfigError(f"split size {size!r} is out of range: {allowed}")
    if not 1 <= k <= n - 1:
        raise ConfigError(f"split size {size!r} gives {k} examples: {allowed}")
    return k


def _largest_remainder(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Integer per-class quotas summing to k, proportional to counts (exact integer arithmetic)."""
    n = int(counts.sum())
    exact = counts * k
    quota = exact // n
    order = torch.sort(exact - quota * n, descending=True, stable=True).indices
    quota[order[: k - int(quota.sum())]] += 1
    return quota
