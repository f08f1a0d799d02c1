"""Export scores in the data set's original order, with what identifies them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.atomic import atomic_write
from benchmarks.errors import ConfigError
from benchmarks.results import write_json_atomic

FORMATS = (".csv", ".npy")


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
