"""Mirror a run to Weights & Biases without ever putting its local record at risk.

The local JSON record is the source of truth and is written before `finish`; every W&B
call is guarded, so an outage, a bad key or a broken install costs a warning, not a run.
The summary layout defined here is what `analysis` reads back from W&B.

A killed cell's rerun continues its W&B run (one run id per cell) and may retrain epochs
that the killed attempt had already logged; each epoch is logged to the run once, the
last one logged kept in a progress file beside W&B's own files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from benchmarks.atomic import atomic_write
from benchmarks.errors import ConfigError

MODES = ("offline", "online", "disabled")
LOGGER_NAMES = ("none", "wandb")
METRIC_KEYS = ("test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss")

log = logging.getLogger(__name__)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}: W&B filters and tables see every key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def cell_tags(cell: Mapping[str, Any]) -> list[str]:
    """Tags that find a cell's runs in the W&B UI without opening their configs."""
    return [
        f"data={cell['data']}",
        f"model={cell['model']}",
        f"method={cell['method']}",
        f"fraction={cell['fraction']:g}",
        f"seed={cell['seed']}",
    ]


def run_name(cell: Mapping[str, Any]) -> str:
    return f"{cell['data']}/{cell['model']}/{cell['method']}/f{cell['fraction']:g}/s{cell['seed']}"


def run_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a finished W&B run keeps: enough to rebuild the record's leaderboard fields."""
    summary: dict[str, Any] = {
        **record.get("metrics", {}),
        "status": record["status"],
        "run_key": record["run_key"],
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "record_path": record.get("record_path"),
        "timings": dict(record.get("timings", {})),
    }
    if "error" in record:
        summary["error"] = record["error"]
    if "selection" in record:
        sel = record["selection"]
        summary["selection"] = {
            "kept": sel["kept"],
            "total": sel["total"],
            "fraction_removed": sel["fraction_removed"],
            "kept_flipped": sel["kept_flipped"],
            "score_cost": dict(sel["score_cost"]),
            # the resolved options: the epoch a score was taken at when it follows the schedule
            "method_options": dict(sel.get("method_options") or {}),
            **({"dynamic": dict(sel["dynamic"])} if "dynamic" in sel else {}),
            # the class balance of the kept set (python -m analysis classes)
            **({"kept_per_class": list(sel["kept_per_class"])} if "kept_per_class" in sel else {}),
        }
    if "compute" in record:
        summary["compute"] = {k: v for k, v in record["compute"].items() if k != "passes"}
    if "data" in record:
        data = record["data"]
        summary["data"] = {
            "fingerprint": data["fingerprint"],
            "n_train": data["n_train"],
            "n_test": data["n_test"],
            "flipped": len(data["label_noise"]["flipped"]),
        }
    return summary


def sweep_group() -> str | None:
    """The Hydra multirun's sweep dir: one sweep's runs become one W&B group."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


@dataclass
class WandbLogger:
    """One W&B run per pipeline run: `start`, `log_epoch` per epoch, `finish`."""

    mode: str = "offline"
    project: str = "prunebench"
    entity: str | None = None
    dir: str | None = None
    group: str | None = None
    tags: Sequence[str] = ()
    log_scores: bool = False
    _run: Any = field(default=None, init=False, repr=False)
    _last_epoch: int = field(default=0, init=False, repr=False)  # the W&B run's last epoch
    _progress: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        env_mode = os.environ.get("WANDB_MODE")
        if env_mode:
            self.mode = env_mode
        if self.mode not in MODES:
            source = "environment variable WANDB_MODE" if env_mode else "logger.mode"
            raise ConfigError(f"{source}={self.mode!r} is not a W&B mode; use {', '.join(MODES)}")

    def start(self, record: Mapping[str, Any]) -> None:
        """Open the W&B run of a cell; on failure, warn and log nothing more for it."""
        cell = record["cell"]
        config = flatten({**record["config"], "cell": cell, "run_key": record["run_key"]})
        self._last_epoch, self._progress = 0, None
        try:
            import wandb  # imported here: runs without W&B never pay its import

            directory = Path(self.dir).expanduser() if self.dir else None
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=self.project,
                entity=self.entity,
                dir=directory,
                group=self.group or sweep_group(),
                tags=[*self.tags, *cell_tags(cell)],
                name=run_name(cell),
                id=record["run_key"],  # one W&B run per cell: a rerun continues it
                resume="allow",
                config=config,
                mode=self.mode,
                job_type="train",
                reinit="finish_previous",
            )
            self._run.define_metric("epoch")
            self._run.define_metric("*", step_metric="epoch")
            wandb_dir = getattr(getattr(self._run, "settings", None), "wandb_dir", None)
            if wandb_dir:
                self._progress = progress_path(Path(wandb_dir), record["run_key"])
            self._last_epoch = self._logged_before()
        except Exception as err:
            self._abandon("init", err)

    def _logged_before(self) -> int:
        """The last epoch this W&B run holds from earlier attempts: from the progress file
        they left (offline runs too), or from the summary W&B restores on an online resume."""
        last = 0
        if self._progress is not None and self._progress.is_file():
            with suppress(OSError, ValueError, KeyError, TypeError):
                last = int(json.loads(self._progress.read_text())["epoch"])
        if getattr(self._run, "resumed", False):
            with suppress(TypeError, ValueError):
                last = max(last, int(self._run.summary.get("epoch") or 0))
        return last

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """Per-epoch curve point (epoch, step, lr, losses, accuracies, seconds), unless the
        W&B run holds this epoch already (a rerun retraining what a killed attempt logged)."""
        epoch = int(row["epoch"])
        if self._run is None or epoch <= self._last_epoch:
            return
        try:
            self._run.log(dict(row))
        except Exception as err:
            self._abandon("log", err)
            return
        self._last_epoch = epoch
        if self._progress is not None:
            try:
                atomic_write(self._progress, lambda f: json.dump({"epoch": epoch}, f), binary=False)
            except OSError as err:
                log.warning("W&B progress file %s not written (%s)", self._progress, err)

    def finish(self, record: Mapping[str, Any], scores: np.ndarray | None = None) -> None:
        """Log the curve rows the W&B run does not hold yet, the summary, optionally the
        scores; close the run. `scores` are the method's per-example scores in
        training-set order."""
        if self._run is None:
            return
        for row in record.get("curve", []):
            if int(row["epoch"]) > self._last_epoch:
                self.log_epoch(row)
        run = self._run
        if run is None:
            return
        try:
            run.summary.update(run_summary(record))
            if self.log_scores and scores is not None:
                run.log_artifact(scores_artifact(record, scores))
            run.finish(exit_code=0 if record["status"] == "finished" else 1)
        except Exception as err:
            self._abandon("finish", err)
            return
        self._run = None

    def _abandon(self, stage: str, err: Exception) -> None:
        log.warning(
            "W&B %s failed (%s: %s); the local record is unaffected, going on without W&B",
            stage,
            type(err).__name__,
            err,
        )
        run, self._run = self._run, None
        if run is not None:
            with suppress(Exception):
                run.finish(exit_code=1)


def progress_path(wandb_dir: Path, run_key: str) -> Path:
    """Where a cell's W&B run keeps its last logged epoch: beside W&B's own run folders
    (which the offline reader never takes for one), so that it goes where they go."""
    return wandb_dir / "prunebench-progress" / f"{run_key}.json"


def scores_artifact(record: Mapping[str, Any], scores: np.ndarray) -> Any:
    """A versioned artifact per (data, method): W&B stores identical scores only once."""
    import wandb

    cell = record["cell"]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"scores-{cell['data']}-{cell['method']}")
    artifact = wandb.Artifact(
        name,
        type="scores",
        description="per-example scores in training-set order (high = kept first)",
        metadata={
            "method": cell["method"],
            "method_name": cell["method_name"],
            "method_options": record["selection"]["method_options"],
            "data_fingerprint": record["data"]["fingerprint"],
            "val_indices_sha256": record["data"]["val_indices_sha256"],
            "run_key": record["run_key"],
        },
    )
    with artifact.new_file("scores.npy", mode="wb") as f:
        np.save(f, np.asarray(scores, dtype=np.float64))
    return artifact


def make_logger(cfg: Mapping[str, Any] | None) -> WandbLogger | None:
    """The logger the config's `logger` section asks for; None for `name: none`."""
    name = str(cfg.get("name", "none")) if cfg else "none"
    if name not in LOGGER_NAMES:
        raise ConfigError(f"logger.name={name!r} is unknown; use {' or '.join(LOGGER_NAMES)}")
    if cfg is None or name == "none":
        return None
    return WandbLogger(
        mode=str(cfg.get("mode", "offline")),
        project=str(cfg.get("project") or "prunebench"),
        entity=cfg.get("entity"),
        dir=cfg.get("dir"),
        group=cfg.get("group"),
        tags=[str(t) for t in cfg.get("tags") or ()],
        log_scores=bool(cfg.get("log_scores", False)),
    )
