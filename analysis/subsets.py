"""Kept subsets of finished runs: exported one file per cell, and compared between methods.

Each record names its kept-subset sidecar (benchmarks/subsets.py) and holds its sha256;
a file that is missing or does not match is an error, never silently used.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.collect import finished_runs, local_records, records_frame
from analysis.errors import AnalysisError
from benchmarks.subsets import Subset, file_sha256, read_subset, record_subset


@dataclass
class CellSubset:
    row: pd.Series  # the run's row of analysis.collect (cell, protocol, variant, ...)
    subset: Subset

    @property
    def trained_on(self) -> np.ndarray:
        """Static runs: the kept indices; dynamic runs: every example presented at least once."""
        if self.subset.counts is None:
            return self.subset.indices
        return self.subset.indices[self.subset.counts > 0]

    @property
    def name(self) -> str:
        """The record's file name without its time stamp: one name per cell."""
        r = self.row
        name = f"{r['data']}_{r['model']}_{r['method']}_f{r['fraction']:g}_s{r['seed']}"
        return re.sub(r"[^A-Za-z0-9_.=-]", "-", f"{name}_{r['run_key']}")


def cell_subsets(root: Path) -> tuple[list[CellSubset], list[str]]:
    """The subset of every finished cell (the latest run of each), checked against its record."""
    records = {r["record_path"]: r for r in local_records(root)}
    runs, notes = finished_runs(records_frame(records.values()), str(root))
    found, missing = [], 0
    for _, row in runs.iterrows():
        record = records[row["record_path"]]
        path = record_subset(Path(row["record_path"]), record)
        if path is None:
            missing += 1
            continue
        if not path.is_file():
            raise AnalysisError(f"{row['record_path']}: its kept-subset file {path} is missing")
        if file_sha256(path) != record["selection"]["subset"]["sha256"]:
            raise AnalysisError(
                f"{path} does not match the sha256 in its record {Path(row['record_path']).name}"
            )
        found.append(CellSubset(row, read_subset(path)))
    if missing:
        notes.append(f"{missing} finished run(s) have no kept-subset file (recorded before it)")
    if not found:
        raise AnalysisError(f"no run under {str(root)!r} has a kept-subset file")
    return found, notes


def export_subsets(cells: list[CellSubset], out: Path) -> list[Path]:
    """DIR/<cell>.npy (indices trained on) and DIR/<cell>.csv (index [, weight] [, presentations]),
    plus DIR/subsets.csv listing the cells."""
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for cell in cells:
        np.save(out / f"{cell.name}.npy", cell.trained_on)
        table = pd.DataFrame({"index": cell.subset.indices})
        if cell.subset.weights is not None:
            table["weight"] = cell.subset.weights
        if cell.subset.counts is not None:
            table["presentations"] = cell.subset.counts
        table.to_csv(out / f"{cell.name}.csv", index=False)
        r = cell.row
        listing.append(
            {
                "file": cell.name,
                **{k: r[k] for k in ("data", "model", "method", "fraction", "seed", "run_key")},
                "kept": int(cell.trained_on.size),
                "dynamic": cell.subset.counts is not None,
                "weighted": cell.subset.weights is not None,
            }
        )
    index = out / "subsets.csv"
    pd.DataFrame(listing).to_csv(index, index=False)
    return [index]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.union1d(a, b).size
    return np.intersect1d(a, b).size / union if union else 1.0


def overlap_tables(cells: list[CellSubset], digits: int = 3) -> str:
    """Markdown: per (data, model, protocol) and removed fraction, the mean Jaccard overlap of
    the kept sets of every pair of methods (over the seeds both ran) and, on the diagonal,
    between different seeds of one method. Dynamic runs keep no single set and are left out."""
    static = [c for c in cells if c.subset.counts is None]
    if not static:
        raise AnalysisError("no static run with a kept subset (dynamic runs have none)")
    blocks = []
    key = lambda c: (c.row["data"], c.row["model"], c.row["protocol"], c.row["fraction"])  # noqa: E731
    for (data, model, protocol, fraction), group in itertools.groupby(
        sorted(static, key=key), key=key
    ):
        sets = _sets_by_method(list(group))
        names = sorted(sets)
        lines = [
            f"### {data} / {model} (protocol {protocol}), removed {fraction:g}",
            "",
            "| method | " + " | ".join(names) + " |",
            "| --- |" + " ---: |" * len(names),
        ]
        for a in names:
            cells_ = [_fmt(_mean_overlap(sets[a], sets[b], a == b), digits) for b in names]
            lines.append(f"| {a} | " + " | ".join(cells_) + " |")
        blocks.append("\n".join(lines))
    note = (
        "Jaccard |A ∩ B| / |A ∪ B| of kept training indices; off the diagonal the mean over "
        "seeds both methods ran (all seed pairs if none is shared), on it the mean over pairs "
        "of different seeds of one method (— with one seed)."
    )
    return note + "\n\n" + "\n\n".join(blocks) + "\n"


def _sets_by_method(group: list[CellSubset]) -> dict[str, dict[int, np.ndarray]]:
    """Kept sets by method label and seed; a label run in several variants is told apart."""
    variants: dict[str, set[str]] = {}
    for c in group:
        variants.setdefault(c.row["method"], set()).add(c.row["variant"])
    sets: dict[str, dict[int, np.ndarray]] = {}
    for c in group:
        label = c.row["method"]
        if len(variants[label]) > 1:
            label = f"{label} [{c.row['variant']}]"
        sets.setdefault(label, {})[int(c.row["seed"])] = c.trained_on
    return sets


def _mean_overlap(a: dict[int, np.ndarray], b: dict[int, np.ndarray], same: bool) -> float | None:
    if same:
        pairs = list(itertools.combinations(sorted(a), 2))
        values = [jaccard(a[s], a[t]) for s, t in pairs]
    else:
        shared = sorted(set(a) & set(b))
        pairs_: Any = [(s, s) for s in shared] or itertools.product(a, b)
        values = [jaccard(a[s], b[t]) for s, t in pairs_]
    return float(np.mean(values)) if values else None


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
