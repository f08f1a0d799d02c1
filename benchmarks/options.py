"""Type checks of the open option mappings (a method's, a model's) against annotations.

The config schema types every fixed key; method and model options are open, so each
is checked here against the annotation of the dataclass field or function parameter
it sets, before anything is built: `method.runs=abc` is one line, not a traceback.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from benchmarks.errors import ConfigError

_SPELLING = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
    dict: "a mapping",
    list: "a list",
    tuple: "a list",
}


def check_option_types(section: str, options: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """ConfigError naming the first option whose value does not fit its annotation."""
    for name, value in options.items():
        expected = hints.get(name, Any)
        if not fits(value, expected):
            raise ConfigError(f"{section}.{name}={value!r} must be {spell(expected)}")


def fits(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(expected))
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is type(None):
        return value is None
    if origin in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    return isinstance(value, origin or expected)


def spell(expected: Any) -> str:
    if typing.get_origin(expected) in (Union, types.UnionType):
        return " or ".join(spell(arg) for arg in typing.get_args(expected))
    kind = typing.get_origin(expected) or expected
    return _SPELLING.get(kind, getattr(kind, "__name__", str(kind)))
