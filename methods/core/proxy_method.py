"""Shared options of the methods that score with K independent proxy trainings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from benchmarks.errors import ConfigError
from benchmarks.seeding import CELL_SEED
from methods.core.base import PruningMethod, ScoreContext
from methods.core.dynamics import Proxy


def epoch_at(fraction: float, epochs: int, minimum: int = 0) -> int:
    """`fraction` of an `epochs`-long schedule, rounded half up, at least `minimum`.

    Epoch-valued defaults follow the proxy's schedule this way, so that "early in
    training" stays early whatever `train.epochs` is (Data Diet's epoch 20 of 200 is 0.1).
    """
    return max(minimum, math.floor(fraction * epochs + 0.5))


def check_window(window: int, horizon: int, minimum: int, why: str = "") -> None:
    """A sliding window of `window` epochs, at least `minimum`, inside the first `horizon`."""
    if not minimum <= window <= horizon:
        raise ConfigError(
            f"method.window={window} must lie in {minimum}..method.horizon={horizon}{why}"
        )


def sliding_window_epochs(
    horizon: int | None,
    window: int | None,
    horizon_fraction: float,
    schedule_epochs: int,
    minimum: int,
    why: str = "",
) -> dict[str, int]:
    """The epochs of a sliding-window score (TDDS, DUAL): `horizon`, or `horizon_fraction`
    of the proxy's schedule (at least `minimum`), and `window`, or a third of the horizon
    (within `minimum`..horizon), so that the score stays early whatever the schedule."""
    if horizon is None:
        horizon = epoch_at(horizon_fraction, schedule_epochs, minimum=minimum)
    if window is None:
        window = min(horizon, epoch_at(1 / 3, horizon, minimum=minimum))
    check_window(window, horizon, minimum, why)
    return {"horizon": horizon, "window": window}


MAX_RUNS = 1000


@dataclass
class ProxyMethod(PruningMethod):
    """`runs` independent proxy trainings (different init and data order), averaged."""

    # options that name an epoch of the proxy training (checked against its schedule)
    epoch_options: ClassVar[tuple[str, ...]] = ("epoch",)

    runs: int = 10
    proxy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= int(self.runs) <= MAX_RUNS:
            raise ConfigError(
                f"method.runs={self.runs} must be in [1, {MAX_RUNS}]: each run is a whole "
                "proxy training (Data Diet averages 10)"
            )
        Proxy.from_options(self.proxy)
        for name in ("epoch_fraction", "horizon_fraction"):
            value = getattr(self, name, None)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"method.{name}={value} is outside [0, 1]")

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

    def schedule_epochs(self, ctx: ScoreContext) -> int:
        """Length of the proxy's schedule: `proxy.epochs`, or the run's `train.epochs`."""
        return ctx.proxy_settings(self.proxy_spec.epochs).epochs

    def early_epoch(self, ctx: ScoreContext, epoch: int | None, fraction: float) -> int:
        """`epoch`, or when it is None `fraction` of the proxy's schedule (at least 1 if > 0)."""
        if epoch is not None:
            return int(epoch)
        return epoch_at(fraction, self.schedule_epochs(ctx), minimum=int(fraction > 0))

    def resolved_epochs(self, ctx: ScoreContext) -> dict[str, int]:
        """The epoch-valued options whose value follows the proxy's schedule, made concrete."""
        return {}

    def resolved_proxy(self, ctx: ScoreContext) -> dict[str, Any]:
        """`proxy` with `seed: cell` made the cell's seed (`ctx.seed`)."""
        if self.proxy.get("seed") == CELL_SEED:
            return {**self.proxy, "seed": ctx.seed}
        return self.proxy

    def resolve(self, ctx: ScoreContext) -> ProxyMethod:
        return dataclasses.replace(
            self, proxy=self.resolved_proxy(ctx), **self.resolved_epochs(ctx)
        )
