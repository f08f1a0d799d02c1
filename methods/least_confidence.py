"""Least confidence of the proxy's softmax (uncertainty sampling)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.registry import register
from methods.core.uncertainty import PAPER, Uncertainty


@register
@dataclass
class LeastConfidence(Uncertainty):
    name = "least_confidence"
    summary = "1 - max_k p_k of the proxy's softmax at epoch t (default: end of proxy training)"
    paper = PAPER
    direction = "low top probability = uncertain = kept first"
    summary_name = "least_confidence"
