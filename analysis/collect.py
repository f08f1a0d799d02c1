"""Result records -> one DataFrame, one row per run, ready to be compared.

Every row carries a `protocol` id (hash of the data, model and training config) and a
`variant` id (hash of the method's options and the prune settings other than the
fraction), so that later steps never average runs that were not run the same way.
Filtering to finished runs and resolving duplicates is explicit: the notes say what
was left out and why.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.schema import (
    CELL_KEYS,
    DATA_LOCATION_KEYS,
    METRIC_KEYS,
    SCHEMA,
    SPEED_ONLY_TRAIN_KEYS,
)
from analysis.wandb_offline import offline_records
from analysis.wandb_source import wandb_records
from benchmarks.bundles import BundleError, is_bundle, open_bundle

WANDB_PREFIX = "wandb:"
WANDB_OFFLINE_PREFIX = "wandb-offline:"
FULL = "full"


@dataclass
class Collection:
    """All runs of a source, and the finished, de-duplicated ones that tables use."""

    source: str
    all_runs: pd.DataFrame
    runs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def collect(source: str, group: str | None = None, tags: Sequence[str] = ()) -> Collection:
    """Records of a results directory (recursive), `wandb:ENTITY/PROJECT` or `wandb-offline:DIR`."""
    unreadable: list[str] = []  # notes on files of a local source that are no record
    if source.startswith(WANDB_PREFIX):
        records = wandb_records(source[len(WANDB_PREFIX) :], group, tags)
    elif source.startswith(WANDB_OFFLINE_PREFIX):
        records = offline_records(Path(source[len(WANDB_OFFLINE_PREFIX) :]), group, list(tags))
    elif is_bundle(source):
        try:
            folder = open_bundle(Path(source))
        except BundleError as err:
            raise AnalysisError(str(err)) from None
        records = local_records(folder / "records", unreadable)
    else:
        if group or tags:
            raise AnalysisError(
                "--group and --tag filter W&B runs; use them with wandb:ENTITY/PROJECT "
                "or wandb-offline:DIR"
            )
        records = local_records(Path(source), unreadable)
    all_runs = records_frame(records)
    runs, notes = finished_runs(all_runs, source)
    return Collection(source, all_runs, runs, unreadable + notes)


def local_records(root: Path, unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Every record below `root`; temp files of writes in flight (".name") are skipped, and so
    is a file that is not a readable record (a disk that filled, a hand edit), with a note
    in `unreadable`: its cell's rerun wrote another record that the tables read."""
    if not root.exists():
        raise AnalysisError(f"results directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise AnalysisError(f"{str(root)!r} is not a directory; give the results directory")
    records = []
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            if unreadable is not None:
                unreadable.append(f"skipped {str(path)!r}: not a readable record ({err})")
            continue
        if isinstance(record, dict) and record.get("schema") == SCHEMA and "cell" in record:
            record["record_path"] = str(path)  # where it is now, not where it was written
            records.append(record)
    if not records:
        raise AnalysisError(
            f"no result records (JSON files with schema {SCHEMA}) under {str(root)!r}"
        )
    return records


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([run_row(r) for r in records])
    frame["finished_at"] = pd.to_datetime(frame["finished_at"], utc=True, format="ISO8601")
    return frame


def score_epoch(config: Mapping[str, Any], selection: Mapping[str, Any]) -> Any:
    """The epoch the score was taken at: resolved in the record (an epoch that follows the
    proxy's schedule), else as configured (records from before resolution was recorded)."""
    resolved = selection.get("method_options") or {}
    if resolved.get("epoch") is not None:
        return resolved["epoch"]
    return (config.get("method") or {}).get("epoch")


def run_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One run as flat columns: cell, protocol, metrics, selection cost, provenance."""
    cell = record["cell"]
    config = record.get("config") or {}
    selection = record.get("selection") or {}
    cost = selection.get("score_cost") or {}
    metrics = record.get("metrics") or {}
    compute = record.get("compute") or {}
    protocol = protocol_config(config)
    variant = variant_config(config, cell)
    return {
        "run_key": record["run_key"],
        "status": record["status"],
        **{key: cell.get(key) for key in CELL_KEYS},
        "score_epoch": score_epoch(config, selection),
        "proxy_seed": ((config.get("method") or {}).get("proxy") or {}).get("seed"),
        "proxy_epochs": cost.get("proxy_epochs"),
        "proxy_trainings": cost.get("proxy_trainings"),
        "score_seconds": cost.get("seconds"),
        "trainings_run": cost.get("trainings_run"),
        "kept": selection.get("kept"),
        "kept_per_class": selection.get("kept_per_class"),
        "total": selection.get("total"),
        "removed": selection.get("fraction_removed"),
        **{key: metrics.get(key) for key in METRIC_KEYS},
        "train_seconds": (record.get("timings") or {}).get("train"),
        # the cell's compute in example-passes of the trained network (benchmarks.compute)
        "compute": compute.get("total"),
        "compute_score": compute.get("score"),
        "compute_train": compute.get("train"),
        "compute_seconds": compute.get("wall_seconds"),
        "dynamic": "dynamic" in selection,
        "protocol": short_hash(protocol),
        "variant": short_hash(variant),
        "protocol_config": canonical(protocol),
        "variant_config": canonical(variant),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "record_path": record.get("record_path"),
    }


def protocol_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the final model's training depends on besides the subset: data, model, train.

    As in the run key, where the data lives and speed-only switches are left out, so a
    compiled rerun lands in the same table as the eager runs.
    """
    data = {k: v for k, v in (config.get("data") or {}).items() if k not in DATA_LOCATION_KEYS}
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in SPEED_ONLY_TRAIN_KEYS}
    return {"data": data, "model": config.get("model"), "train": train}


def variant_config(config: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, Any]:
    """How the subset was chosen, apart from its size: method options and prune settings."""
    method = {k: v for k, v in (config.get("method") or {}).items() if k != "label"}
    if cell["method_name"] == FULL:
        return {"method": method}
    prune = {k: v for k, v in (config.get("prune") or {}).items() if k != "fraction"}
    return {"method": method, "prune": prune}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:8]


def finished_runs(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[str]]:
    """Finished runs, the latest `finished_at` per run key; notes say what was dropped."""
    notes = []
    statuses = frame["status"].value_counts()
    finished = frame[frame["status"] == "finished"]
    if finished.empty:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
        raise AnalysisError(f"none of the {len(frame)} run(s) in {source!r} finished ({counts})")
    others = statuses.drop("finished")
    if others.sum():
        counts = ", ".join(f"{status} {n}" for status, n in sorted(others.items()))
        notes.append(f"skipped {others.sum()} run(s) that did not finish ({counts})")
    usable = finished["test_acc"].map(_is_finite)
    if not usable.all():
        unusable = finished[~usable]
        notes.append(
            f"skipped {len(unusable)} finished run(s) without a usable test_acc (missing or "
            f"NaN): {', '.join(_run_name(row) for _, row in unusable.iterrows())}"
        )
        finished = finished[usable]
        if finished.empty:
            raise AnalysisError(f"no run in {source!r} finished with a usable test_acc")
    latest = finished.sort_values("finished_at", kind="stable", na_position="first")
    latest = latest.drop_duplicates("run_key", keep="last")
    dropped = len(finished) - len(latest)
    if dropped:
        keys = finished["run_key"].value_counts()
        repeated = sorted(keys[keys > 1].index)
        notes.append(
            f"resolved {dropped} duplicate run(s) of {len(repeated)} cell/seed(s) "
            f"(same run_key: {', '.join(repeated)}): the latest finished_at of each is used"
        )
    order = ["data", "model", "method", "fraction", "seed"]
    return latest.sort_values(order).reset_index(drop=True), notes


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _run_name(row: pd.Series) -> str:
    """A run as the table's reader finds it: its cell and its record file."""
    where = Path(str(row["record_path"])).name if row.get("record_path") else row["run_key"]
    return f"{row['method']} f={row['fraction']:g} seed {row['seed']} ({where})"
