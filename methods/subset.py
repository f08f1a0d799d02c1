"""A subset chosen elsewhere, as a method: train on exactly the examples a file names.

The submission is the subset and the training is the benchmark's (the model of
DataComp's filtering track, Gadre et al., NeurIPS 2023 Datasets and Benchmarks). The
file names examples by their index in the data set's original training order:

- `.npy`: a 1-D integer array of indices;
- `.csv`: an `index` column, and optionally a `weight` column (per-example loss weights);
- `<record>.kept.npz`: another run's kept-subset sidecar (its indices and weights); the
  record beside it names the data set (checked against the run's) and the sidecar's
  sha256 (checked against the file), and its loss-weighting settings are reused, so the
  same config and seed reproduce that run; its score cost becomes this run's (what
  choosing the subset cost, so that compute compares fairly).

A `.npy`/`.csv` may bring a `FILE.json` with `data.fingerprint` (or
`data.source_fingerprint`) to be checked the same way, and `score_cost` (as a score.py
export states it) to count what choosing the subset cost. The removed fraction is the file's
(`prune.*` does not apply); the leaderboard row is `subset:<the file's name>` unless
`method.label` is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from benchmarks.bundles import resolve_input
from benchmarks.errors import ConfigError
from benchmarks.subsets import SUFFIX as SIDECAR_SUFFIX
from benchmarks.subsets import file_sha256, read_subset
from benchmarks.train import LossWeights
from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import register

SUFFIXES = (".npy", ".csv", SIDECAR_SUFFIX)


@dataclass(frozen=True)
class SubsetFile:
    """The original training indices a file names, their weights, and where it came from."""

    indices: np.ndarray  # int64, unique, >= 0
    weights: np.ndarray | None  # float64, aligned with `indices`
    fingerprint: str | None  # the data set the file was made on, if it says
    label: str
    score_cost: dict[str, Any] = field(default_factory=dict)  # what choosing it cost, if said
    batch_normalise: bool = False
    batch_mean_scale: bool = False


@register
@dataclass
class Subset(PruningMethod):
    name = "subset"
    summary = (
        "the examples a file names: a .npy of original training indices, a .csv with an "
        "`index` (and optional `weight`) column, or another run's <record>.kept.npz"
    )
    paper = "any: a subset selected elsewhere, trained under this protocol (DataComp's model)"
    direction = "none: the file names the kept examples"
    selects: ClassVar[bool] = False

    path: str | None = None

    def __post_init__(self) -> None:
        self._file = read_subset_file(self.path)

    def row_label(self) -> str:
        return self._file.label

    def check(self, ctx: ScoreContext) -> None:
        self._kept, self._weights = positions_for(self._file, str(self.path), ctx)
        ctx.cost.add_artifact(self._file.score_cost)

    def removed_fraction(self, ctx: ScoreContext) -> float | None:
        return (ctx.n - self._kept.size) / ctx.n

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        """1 for the examples the file names, 0 for the others."""
        if not hasattr(self, "_kept"):
            self.check(ctx)
        scores = np.zeros((1, ctx.n))
        scores[0, self._kept] = 1.0
        return scores

    def select_subset(self, ctx: ScoreContext, *args: Any, **kwargs: Any) -> np.ndarray:
        return self._kept

    def subset_weights(self, ctx: ScoreContext, kept: np.ndarray) -> LossWeights | None:
        if self._weights is None:
            return None
        return LossWeights(
            torch.from_numpy(self._weights),
            batch_normalise=self._file.batch_normalise,
            batch_mean_scale=self._file.batch_mean_scale,
        )


def read_subset_file(path: str | None) -> SubsetFile:
    """The file's indices; its own problems (not the run's) raise here, one line each."""
    if not path:
        raise ConfigError(
            "method=subset needs method.path=FILE (.npy, .csv or another run's .kept.npz)"
        )
    file = Path(resolve_input(path)).expanduser()
    if not file.name.endswith(SUFFIXES):
        raise ConfigError(f"method.path={path}: the file must end in {', '.join(SUFFIXES)}")
    if not file.is_file():
        raise ConfigError(f"method.path={path}: no such file")
    try:
        read = _sidecar if file.name.endswith(SIDECAR_SUFFIX) else _listed
        found = read(file, path)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
        raise ConfigError(f"method.path={path}: cannot read it ({err})") from None
    indices = found.indices
    if indices.size == 0:
        raise ConfigError(f"method.path={path}: it names no example")
    if (indices < 0).any():
        raise ConfigError(f"method.path={path}: negative index {int(indices.min())}")
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise ConfigError(
            f"method.path={path}: {dup.size} indices appear more than once (first: {int(dup[0])})"
        )
    if found.weights is not None:
        w = found.weights
        if w.shape != indices.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ConfigError(
                f"method.path={path}: the weights must be finite, >= 0 and one per index"
            )
    return found


def _integers(values: np.ndarray, path: str) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ConfigError(f"method.path={path}: an array of shape {raw.shape}; give 1-D indices")
    if raw.dtype.kind not in "iu":
        as_float = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
            raise ConfigError(f"method.path={path}: the indices must be integers")
        raw = as_float
    return raw.astype(np.int64)


def _listed(file: Path, path: str) -> SubsetFile:
    """A .npy of indices or a .csv with `index` (and `weight`), and its optional .json."""
    sidecar = file.with_name(file.name + ".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    data = meta.get("data") or {}
    fingerprint = data.get("source_fingerprint") or data.get("fingerprint")
    label, cost = f"subset:{file.stem}", meta.get("score_cost") or {}
    if file.suffix == ".npy":
        indices = _integers(np.load(file, allow_pickle=False), path)
        return SubsetFile(indices, None, fingerprint, label, cost)
    table = pd.read_csv(file)
    if "index" not in table:
        raise ConfigError(
            f"method.path={path}: no column 'index' (original training index); columns: "
            f"{', '.join(map(str, table.columns))}"
        )
    weights = None
    if "weight" in table:
        weights = pd.to_numeric(table["weight"], errors="coerce").to_numpy(dtype=np.float64)
    indices = _integers(table["index"].to_numpy(), path)
    return SubsetFile(indices, weights, fingerprint, label, cost)


def _sidecar(file: Path, path: str) -> SubsetFile:
    """Another run's kept subset: checked against the record beside it."""
    record_file = file.with_name(file.name.removesuffix(SIDECAR_SUFFIX) + ".json")
    if not record_file.is_file():
        raise ConfigError(
            f"method.path={path}: no record {record_file.name} beside it (a .kept.npz is "
            "read with its record, which names its data set)"
        )
    record = json.loads(record_file.read_text())
    selection = record.get("selection") or {}
    entry = selection.get("subset") or {}
    if entry.get("sha256") and entry["sha256"] != file_sha256(file):
        raise ConfigError(
            f"method.path={path}: its sha256 is not the one its record states: the file was "
            "changed after the run"
        )
    if "dynamic" in selection:
        raise ConfigError(
            f"method.path={path}: a dynamic run's sidecar lists every example it presented, "
            "not a kept subset"
        )
    subset = read_subset(file)
    data = record.get("data") or {}
    cell = record.get("cell") or {}
    return SubsetFile(
        indices=_integers(subset.indices, path),
        weights=None if subset.weights is None else subset.weights.astype(np.float64),
        fingerprint=data.get("source_fingerprint") or data.get("fingerprint"),
        label=f"subset:{cell.get('method', file.stem)}-s{cell.get('seed', 0)}",
        score_cost=selection.get("score_cost") or {},
        batch_normalise=bool(selection.get("weights_batch_normalised", False)),
        batch_mean_scale=bool(selection.get("weights_batch_mean_scale", False)),
    )


def positions_for(
    file: SubsetFile, path: str, ctx: ScoreContext
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted positions (in the run's training set) of the file's examples, and their weights
    in that order, after checking that the file fits the run's data."""
    n_full = ctx.source_n_train or ctx.n
    fingerprint = ctx.source_fingerprint or ctx.data_fingerprint
    if file.fingerprint and file.fingerprint != fingerprint:
        raise ConfigError(
            f"method.path={path}: a subset of another data set (fingerprint "
            f"{file.fingerprint[:12]}...); this run's data has {fingerprint[:12]}..."
        )
    if int(file.indices.max()) >= n_full:
        raise ConfigError(
            f"method.path={path}: index {int(file.indices.max())} is outside the {n_full} "
            "training examples of the data set"
        )
    position = np.full(n_full, -1, dtype=np.int64)
    position[ctx.original_index] = np.arange(ctx.n)
    found = position[file.indices]
    absent = found < 0
    if absent.any():
        raise ConfigError(
            f"method.path={path}: {int(absent.sum())} of its {file.indices.size} examples are "
            f"not in this run's training set (first: original index "
            f"{int(file.indices[absent][0])}; data.max_train/val_size leave them out)"
        )
    order = np.argsort(found, kind="stable")
    weights = None if file.weights is None else file.weights[order]
    return found[order], weights
