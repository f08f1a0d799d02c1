"""Records rebuilt from W&B runs logged by `benchmarks.wandb_logger`.

A W&B run holds the record's config and cell (flattened) and its summary (final
metrics, status, selection cost), so the leaderboard of a team's shared project is
computed exactly as from local records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analysis.errors import AnalysisError
from analysis.schema import METRIC_KEYS, SCHEMA
from benchmarks.wandb_logger import unflatten


def wandb_records(path: str, group: str | None, tags: Sequence[str]) -> list[dict[str, Any]]:
    """Records of the prunebench runs in `ENTITY/PROJECT`, optionally of one group and tags."""
    import wandb

    if not path or path.count("/") != 1 or not all(path.split("/")):
        raise AnalysisError(f"W&B source 'wandb:{path}' must be wandb:ENTITY/PROJECT")
    filters: dict[str, Any] = {}
    if group:
        filters["group"] = group
    if tags:
        filters["$and"] = [{"tags": {"$in": [tag]}} for tag in tags]
    try:
        runs = list(wandb.Api().runs(path, filters=filters, lazy=False))
    except Exception as err:
        raise AnalysisError(f"cannot list the runs of W&B project {path!r}: {err}") from None
    records = [
        run_record(run.config, run.summary_metrics, f"wandb:{'/'.join(run.path)}")
        for run in runs
        if (group is None or run.group == group) and set(tags) <= set(run.tags)
    ]
    records = [r for r in records if r is not None]
    if not records:
        which = f" in group {group!r}" if group else ""
        which += f" tagged {', '.join(tags)}" if tags else ""
        raise AnalysisError(f"no prunebench runs{which} in W&B project {path!r}")
    return records


def run_record(
    flat_config: Mapping[str, Any], summary: Mapping[str, Any], source: str
) -> dict[str, Any] | None:
    """The record fields a W&B run holds (from the API or offline files); None if not ours."""
    config = unflatten({k: v for k, v in flat_config.items() if not k.startswith("_")})
    if "cell" not in config or "run_key" not in config or "status" not in summary:
        return None
    cell, key = config.pop("cell"), config.pop("run_key")
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_key": key,
        "status": summary["status"],
        "cell": cell,
        "config": config,
        "metrics": {k: summary[k] for k in METRIC_KEYS if k in summary},
        "timings": dict(summary.get("timings") or {}),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "record_path": source,
    }
    if "selection" in summary:
        record["selection"] = dict(summary["selection"])
    if "compute" in summary:
        record["compute"] = dict(summary["compute"])
    return record
