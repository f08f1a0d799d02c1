"""Top-2 margin of the proxy's softmax (uncertainty sampling)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.core.registry import register
from methods.core.uncertainty import PAPER, Uncertainty


@register
@dataclass
class Margin(Uncertainty):
    name = "margin"
    summary = (
        "1 - (p_top1 - p_top2) of the proxy's softmax at epoch t (default: end of proxy training)"
    )
    paper = PAPER
    direction = (
        "small margin = uncertain = kept first, as DeepCore's default balanced mode (its "
        "balance=False path keeps the largest margins); margin is not among Coleman et al.'s scores"
    )
    summary_name = "margin"

    @staticmethod
    def orient(values: np.ndarray) -> np.ndarray:
        return 1.0 - values
