"""Pruning methods. Importing the package registers every method."""

from methods import (  # noqa: F401  (registration side effect)
    aum,
    el2n,
    entropy,
    forgetting,
    full,
    input_norm,
    least_confidence,
    margin,
    random,
)
from methods.registry import get_method, method_classes, method_names

__all__ = ["get_method", "method_classes", "method_names"]
