"""Pruning methods. Importing the package registers every method."""

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
    tdds,
    vog,
)
from methods.registry import get_method, method_classes, method_names

__all__ = ["get_method", "method_classes", "method_names"]
