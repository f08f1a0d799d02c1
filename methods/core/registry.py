"""The registry of pruning methods: register once by class, get by name."""

from __future__ import annotations

from typing import Any

from benchmarks.registry import Registry
from methods.core.base import PruningMethod, make_method

METHODS: Registry[type[PruningMethod]] = Registry("method")


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: the method is known by its `name` attribute."""
    return METHODS.register(cls.name)(cls)


def get_method(name: str, options: dict[str, Any] | None = None) -> PruningMethod:
    return make_method(METHODS.get(name), dict(options or {}))


def method_names() -> list[str]:
    return METHODS.names()


def method_classes() -> list[type[PruningMethod]]:
    return [METHODS.get(name) for name in METHODS.names()]
