"""Shared options of the methods that score with K independent proxy trainings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.errors import ConfigError
from methods.base import PruningMethod
from methods.dynamics import Proxy


@dataclass
class ProxyMethod(PruningMethod):
    """`runs` independent proxy trainings (different init and data order), averaged."""

    runs: int = 10
    proxy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.runs) < 1:
            raise ConfigError(f"method.runs={self.runs} must be >= 1")
        Proxy.from_options(self.proxy)

    @property
    def proxy_spec(self) -> Proxy:
        return Proxy.from_options(self.proxy)
