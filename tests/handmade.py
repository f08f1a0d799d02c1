"""Hand-made result records: just what the analysis reads, with values a test chooses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.schema import SCHEMA


def record(
    method: str,
    fraction: float,
    acc: float,
    *,
    seed: int = 0,
    data: str = "digits",
    model: str = "mlp",
    compute: float | None = None,
    removed: float | None = None,
    epochs: int = 10,
    budget: str = "iterations",
) -> dict[str, Any]:
    """One finished run; `method` "full" trains on everything (fraction 0)."""
    name = method.split(" ")[0]
    fraction = 0.0 if name == "full" else fraction
    cell = {
        "data": data,
        "model": model,
        "method": method,
        "method_name": name,
        "fraction": fraction,
        "seed": seed,
        "keep": "hard",
        "balance": False,
        "strategy": "topk",
        "offset": 0,
        "budget": budget,
        "epochs": epochs,
    }
    return {
        "schema": SCHEMA,
        "run_key": f"{data}-{model}-{method}-{fraction}-{seed}-{budget}-{epochs}",
        "status": "finished",
        "cell": cell,
        "config": {
            "data": {"name": data},
            "model": {"name": model},
            "train": {"epochs": epochs, "budget": budget},
            "method": {"name": name},
            "prune": {"fraction": fraction},
        },
        "selection": {
            "fraction_removed": fraction if removed is None else removed,
            "score_cost": {"proxy_epochs": 0, "proxy_trainings": 0, "seconds": 0.0},
        },
        "metrics": {"test_acc": acc},
        "compute": {} if compute is None else {"total": compute, "wall_seconds": 1.0},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
    }


def write(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        (folder / f"r{i:04d}.json").write_text(json.dumps(rec))
    return folder
