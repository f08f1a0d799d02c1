"""CCS's hard cut (Zheng et al., ICLR 2023): its own AUM, whatever score ranks the rest."""

from __future__ import annotations

import numpy as np

from methods.core.base import PruningMethod, ScoreContext
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import get_method


def ccs_cut_scores(method: PruningMethod, ctx: ScoreContext) -> np.ndarray:
    """-(sum over training presentations of p_y - max_j p_j), high = hardest = cut first.

    The official `train.py` always cuts by `accumulated_margin` (mislabel_mask with
    mis_key='accumulated_margin'), computed from the training run that also gave the
    ranking score: here the ranking method's proxy when it has one, else the default proxy.
    """
    proxy = method.proxy if isinstance(method, ProxyMethod) else {}
    return get_method("aum", {"margin": "probability", "proxy": proxy}).score(ctx)
