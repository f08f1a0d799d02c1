"""Export scores in the data set's original order, with what identifies them."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmarks.atomic import atomic_write
from benchmarks.errors import ConfigError
from benchmarks.results import write_json_atomic

FORMATS = (".csv", ".npy")


def export_method_scores(cfg: DictConfig, out: Path) -> tuple[Path, str]:
    """Compute (or read from the cache) the scores of `cfg`'s method on its data and export
    them to `out`; return the file and a one-line summary. What score.py runs, and what a
    bundle holds for each static method that ran."""
    from benchmarks.distributed import resolve_device
    from benchmarks.pipeline import method_from_config, prepare

    method, label = method_from_config(cfg.method)
    start = time.perf_counter()
    prep = prepare(cfg, resolve_device(str(cfg.device)))
    method = method.resolve(prep.ctx)
    method.check(prep.ctx)
    runs = method.score_runs(prep.ctx)
    meta = {
        "method": label,
        "method_name": method.name,
        "options": method.options(),
        "direction": method.direction,
        "data": prep.data_summary(),
        "score_cost": prep.ctx.cost.as_record(),
        "seconds": time.perf_counter() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    path = export_scores(out, prep.origin, prep.ctx.labels, runs, meta)
    summary = (
        f"{method.name} scores of {runs.shape[1]} examples ({runs.shape[0]} runs, "
        f"{prep.ctx.cost.trainings_run} proxy trainings run now) -> {path}"
    )
    return path, summary


def export_scores(
    out: Path,
    index: np.ndarray,
    labels: np.ndarray,
    runs: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    """Write per-example rows sorted by original index: index, label, score, run_0..run_{K-1}.

    `.npy` holds the same columns as a float64 matrix; the metadata goes to `<out>.json`.
    """
    if out.suffix not in FORMATS:
        raise ConfigError(f"out={str(out)!r}: the file must end in {' or '.join(FORMATS)}")
    order = np.argsort(index, kind="stable")
    columns = {"index": index[order], "label": labels[order], "score": runs.mean(axis=0)[order]}
    columns.update({f"run_{k}": runs[k][order] for k in range(runs.shape[0])})

    def write_npy(f) -> None:
        np.save(f, np.column_stack([c.astype(np.float64) for c in columns.values()]))

    def write_csv(f) -> None:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*(c.tolist() for c in columns.values()), strict=True))

    if out.suffix == ".npy":
        atomic_write(out, write_npy)
    else:
        atomic_write(out, write_csv, binary=False)
    write_json_atomic(out.with_name(out.name + ".json"), {**meta, "columns": list(columns)})
    return out
