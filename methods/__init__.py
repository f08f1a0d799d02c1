"""Pruning methods, one module each. Importing the package registers every method.

The public API for a method of your own: `from methods import PruningMethod, ScoreContext,
register` (the machinery behind it lives in `methods.core`).
"""

from methods import (  # noqa: F401  (registration side effect)
    aum,
    cal,
    contextual_diversity,
    craig,
    d2,
    deepfool,
    dual,
    dyn_unc,
    el2n,
    entropy,
    forgetting,
    full,
    glister,
    gradmatch,
    grand,
    herding,
    infobatch,
    input_norm,
    kcenter,
    least_confidence,
    loss,
    margin,
    moderate,
    precomputed,
    prototypes,
    random,
    rs2,
    submodular,
    subset,
    tdds,
    vog,
)
from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import get_method, method_classes, method_names, register

__all__ = [
    "PruningMethod",
    "ScoreContext",
    "get_method",
    "method_classes",
    "method_names",
    "register",
]
