"""The kept subset of a run, as a compressed sidecar beside its record.

A record's `kept_indices_sha256` proves which examples a run trained on; this file
lets anyone read them. `<record>.kept.npz` (numpy's compressed npz) holds:

- `indices`: int64, sorted, indices in the full data set's original training order:
  the kept examples of a static run, every training example of a dynamic run;
- `weights` (optional): float64, one per entry of `indices`, for methods that train
  on a weighted subset;
- `counts` (optional): int64, one per entry of `indices`, how often a dynamic run
  presented each example to the model.

The record names the file and holds its sha256 (of the file's bytes, so `weights`
and `counts` are covered too). It is written atomically when the record is, just before
it and in the same folder (a fallback folder when results.dir is full), so a record never
points at a missing or half-written subset; a sidecar that a kill left without its record
is removed when its cell's next record is saved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.atomic import atomic_write

SUFFIX = ".kept.npz"


@dataclass(frozen=True)
class Subset:
    indices: np.ndarray
    weights: np.ndarray | None = None
    counts: np.ndarray | None = None


def subset_path(record_path: Path) -> Path:
    """Where the subset of the record at `record_path` lives."""
    return record_path.with_name(record_path.name.removesuffix(".json") + SUFFIX)


def write_subset(
    path: Path,
    indices: np.ndarray,
    weights: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write the subset atomically; return what the record says about it."""
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    arrays = {"indices": indices}
    for name, values, dtype in (("weights", weights, np.float64), ("counts", counts, np.int64)):
        if values is not None:
            values = np.ascontiguousarray(values, dtype=dtype)
            if values.shape != indices.shape:
                raise ValueError(f"{values.shape[0]} {name} for {indices.shape[0]} indices")
            arrays[name] = values
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "arrays": sorted(arrays),
    }


def remove_orphans(folder: Path, run_key: str) -> None:
    """Remove the sidecars of cell `run_key` in `folder` that no record names (a run killed
    between its sidecar and its record)."""
    for path in folder.glob(f"*_{run_key}_*{SUFFIX}"):
        if not path.with_name(path.name.removesuffix(SUFFIX) + ".json").exists():
            path.unlink(missing_ok=True)


def read_subset(path: Path) -> Subset:
    with np.load(path) as blob:
        return Subset(
            indices=blob["indices"],
            weights=blob.get("weights"),
            counts=blob.get("counts"),
        )


def record_subset(record_file: Path, record: dict[str, Any]) -> Path | None:
    """The subset file beside the record read from `record_file`; None if it names none."""
    entry = (record.get("selection") or {}).get("subset")
    return None if not entry else record_file.with_name(entry["file"])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
