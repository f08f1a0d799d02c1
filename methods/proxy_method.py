"""Shared options of the methods that score with K independent proxy trainings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from benchmarks.errors import ConfigError
from methods.base import PruningMethod
from methods.dynamics import Proxy


@dataclass
class ProxyMethod(PruningMethod):
    """`runs` independent proxy trainings (different init and data order), averaged."""

    # options that name an epoch of the proxy training (checked against its schedule)
    epoch_options: ClassVar[tuple[str, ...]] = ("epoch",)

    runs: int = 10
    proxy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.runs) < 1:
            raise ConfigError(f"method.runs={self.runs} must be >= 1")
        Proxy.from_options(self.proxy)

    def check_schedule(self, train_cfg: Mapping[str, Any]) -> None:
        proxy = self.proxy_spec
        end = int(train_cfg["epochs"]) if proxy.epochs is None else proxy.epochs
        for name in self.epoch_options:
            value = getattr(self, name, None)
            if value is not None and not 0 <= value <= end:
                raise ConfigError(
                    f"method.{name}={value} is outside the proxy training's 0..{end} epochs "
                    "(method.proxy.epochs, else train.epochs)"
                )

    @property
    def proxy_spec(self) -> Proxy:
        return Proxy.from_options(self.proxy)
