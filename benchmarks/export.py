"""Export scores in the data set's original order, with what identifies them."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb" if out.suffix == ".npy" else "w", newline="") as f:
            if out.suffix == ".npy":
                np.save(f, np.column_stack([c.astype(np.float64) for c in columns.values()]))
            else:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows(zip(*(c.tolist() for c in columns.values()), strict=True))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json_atomic(out.with_name(out.name + ".json"), {**meta, "columns": list(columns)})
    return out
