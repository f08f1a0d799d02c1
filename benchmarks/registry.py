"""A name -> object table shared by data sets, models and pruning methods.

One registry class means one behaviour for unknown names everywhere: the error
names the bad value and lists what exists. Each entry remembers where it came from
(prunebench itself or a plugin), so a listing can say so and a clash names both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from benchmarks.errors import ConfigError

T = TypeVar("T")
BUILT_IN = "prunebench"
_registering_for = [BUILT_IN]


@contextmanager
def registering_for(origin: str) -> Iterator[None]:
    """Entries registered inside this block come from `origin` (a plugin's name)."""
    _registering_for.append(origin)
    try:
        yield
    finally:
        _registering_for.pop()


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            origin = _registering_for[-1]
            if name in self._items:
                raise ConfigError(
                    f"{origin} registers {self.kind} '{name}', which {self._origins[name]} "
                    "already registers; choose another name"
                )
            self._items[name] = item
            self._origins[name] = origin
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}")
        return self._items[name]

    def origin(self, name: str) -> str:
        """Who registered `name`: 'prunebench' or the plugin it comes from."""
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
