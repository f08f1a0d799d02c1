"""The value a cell returns to a Hydra sweeper that optimises (Optuna, Nevergrad, Ax).

Tuning a method (InfoBatch's ratio, a score's epoch) must select on validation accuracy:
selecting on the test set is the protocol error this suite exists to prevent, so a sweep
that optimises without a validation split is refused before any cell runs. A diverged or
failed cell returns the sweeper's worst value, so it can never be chosen and the study
goes on. `hydra/sweeper=optuna` therefore maximises unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from omegaconf import DictConfig

from benchmarks.errors import ConfigError

OBJECTIVE = "val_acc"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def optimising(hydra_cfg: DictConfig) -> bool:
    """True under a sweeper that reads the job's return value (any but Hydra's basic one)."""
    target = str((hydra_cfg.get("sweeper") or {}).get("_target_", BASIC_SWEEPER))
    return target != BASIC_SWEEPER


def maximise_by_default() -> None:
    """Store the Optuna sweeper's config again with `direction: maximize` (the plugin's own
    default minimises). Hydra refuses a yaml of the same name beside the plugin's schema,
    so the node itself is replaced, once Hydra has scanned its plugins (the scan runs each
    plugin's module, storing its node, once per process). Without the plugin, nothing to do."""
    Plugins.instance()
    try:
        from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
    except ImportError:
        return

    @dataclass
    class MaximisingOptunaSweeperConf(OptunaSweeperConf):
        direction: Any = Direction.maximize

    ConfigStore.instance().store(
        group="hydra/sweeper",
        name="optuna",
        node=MaximisingOptunaSweeperConf,
        provider="prunebench",
    )


def check_objective(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Before any work: an optimising sweep needs a validation split and direction=maximize."""
    if not optimising(hydra_cfg):
        return
    sweeper = str(hydra_cfg.sweeper._target_).rsplit(".", 1)[-1]
    if not float(cfg.data.get("val_size") or 0):
        raise ConfigError(
            f"{sweeper} optimises each cell's validation accuracy, but data.val_size=0 leaves "
            "no validation split; set data.val_size (e.g. 0.1) — the test set is never used "
            "for selection"
        )
    direction = hydra_cfg.sweeper.get("direction", "maximize")
    if str(direction).lower().rsplit(".", 1)[-1] != "maximize":
        raise ConfigError(
            f"hydra.sweeper.direction={direction} but the objective is validation accuracy "
            "(higher is better); use hydra.sweeper.direction=maximize"
        )


def objective(record: Mapping[str, Any] | None) -> float:
    """Validation accuracy of a finished cell; -inf (the worst under maximize) otherwise."""
    if record is None or record.get("status") != "finished":
        return -math.inf
    value = (record.get("metrics") or {}).get(OBJECTIVE)
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return float(value)
