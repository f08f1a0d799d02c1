"""Entropy of the proxy's softmax (uncertainty sampling)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.registry import register
from methods.core.uncertainty import PAPER, Uncertainty


@register
@dataclass
class Entropy(Uncertainty):
    name = "entropy"
    summary = (
        "-sum_k p_k log p_k of the proxy's softmax at epoch t (default: end of proxy training)"
    )
    paper = PAPER
    direction = "high entropy = uncertain = kept first"
    summary_name = "entropy"
