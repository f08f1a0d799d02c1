"""Scores computed elsewhere (another codebase, a released file, score.py) as a method.

The file holds one score per training example in the data set's original training
order, so the same file serves every run, whatever its `data.max_train`/`val_size`
subset: the run picks the scores of its own examples by original index. Everything
wrong with the file is one clear error before anything runs or is recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.bundles import resolve_input
from benchmarks.errors import ConfigError
from benchmarks.state_files import read_state_strictly
from methods.core.base import PruningMethod, ScoreContext
from methods.core.registry import register

SUFFIXES = (".npy", ".pt", ".csv")
DIRECTIONS = ("high", "low")


@dataclass(frozen=True)
class ScoreFile:
    """Scores keyed by original training index, and the export's metadata (if any)."""

    index: np.ndarray  # int64, unique
    scores: np.ndarray  # float64, finite
    meta: dict[str, Any]  # the export's .json sidecar ({} for a file from elsewhere)
    labels: np.ndarray | None  # the labels the scores were computed with (if a column)
    keyed: bool  # an index column says which example each score belongs to


@register
@dataclass
class Precomputed(PruningMethod):
    name = "precomputed"
    summary = (
        "scores read from a file: a 1-D .npy/.pt array in original training order, a .csv "
        "with an `index` column (rows in any order) and a score column, or a score.py export"
    )
    paper = "any: benchmark scores from another codebase under this protocol"
    # `direction` is an option here: which end of the file's scores is hard
    path: str | None = None
    direction: str = "high"
    column: str = "score"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"method.direction={self.direction!r} is not one of {', '.join(DIRECTIONS)} "
                "(high: a high score means hard, kept first under prune.keep=hard)"
            )
        self._file = read_score_file(self.path, self.column)

    def check(self, ctx: ScoreContext) -> None:
        self._scores = scores_for(self._file, str(self.path), ctx)
        ctx.cost.add_artifact(self._file.meta.get("score_cost") or {})

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        if not hasattr(self, "_scores"):
            self.check(ctx)
        sign = 1.0 if self.direction == "high" else -1.0
        return sign * self._scores[None, :]


def read_score_file(path: str | None, column: str) -> ScoreFile:
    """The file's scores by original index; its own problems (not the run's) raise here."""
    if not path:
        raise ConfigError("method=precomputed needs method.path=FILE (.npy, .pt or .csv)")
    file = Path(resolve_input(path)).expanduser()
    if file.suffix not in SUFFIXES:
        raise ConfigError(f"method.path={path}: the file must end in {', '.join(SUFFIXES)}")
    if not file.is_file():
        raise ConfigError(f"method.path={path}: no such file")
    sidecar = file.with_name(file.name + ".json")
    try:
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"method.path={path}: its sidecar {sidecar} is not JSON ({err})"
        ) from None
    if not isinstance(meta, dict):
        raise ConfigError(f"method.path={path}: its sidecar {sidecar} is not a JSON object")
    try:
        table = _read_table(file, meta, path)
    except (OSError, ValueError, RuntimeError, EOFError, pd.errors.ParserError) as err:
        raise ConfigError(f"method.path={path}: cannot read it ({err or 'empty'})") from None
    if isinstance(table, np.ndarray):
        values = table.astype(np.float64)
        if values.ndim != 1:
            raise ConfigError(
                f"method.path={path}: an array of shape {values.shape}; give one score per "
                "training example (1-D), or a score.py export with its .json beside it"
            )
        index, labels, keyed = np.arange(values.size), None, False
    else:
        (index, values, labels), keyed = _columns(table, path, column), True
    bad = ~np.isfinite(values)
    if bad.any():
        raise ConfigError(
            f"method.path={path}: {int(bad.sum())} scores are NaN or infinite "
            f"(first at index {int(index[bad][0])})"
        )
    return ScoreFile(index=index, scores=values, meta=meta, labels=labels, keyed=keyed)


def _read_table(file: Path, meta: dict[str, Any], path: str) -> np.ndarray | pd.DataFrame:
    if file.suffix == ".csv":
        return pd.read_csv(file)
    if file.suffix == ".pt":
        values = read_state_strictly(file, f"method.path={path}")
        if not isinstance(values, torch.Tensor):
            raise ConfigError(
                f"method.path={path}: holds a {type(values).__name__}, not a tensor of scores"
            )
        return values.numpy()
    values = np.load(file, allow_pickle=False)
    if values.ndim == 2 and meta.get("columns"):  # score.py's .npy export: its columns
        if len(meta["columns"]) != values.shape[1]:
            raise ValueError(f"{values.shape[1]} columns but the .json names {meta['columns']}")
        return pd.DataFrame(values, columns=meta["columns"])
    return values


def _columns(
    table: pd.DataFrame, path: str, column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    for needed, hint in (("index", "original training index"), (column, "method.column")):
        if needed not in table:
            raise ConfigError(
                f"method.path={path}: no column {needed!r} ({hint}); columns: "
                f"{', '.join(map(str, table.columns))}"
            )
    raw = pd.to_numeric(table["index"], errors="coerce").to_numpy(dtype=np.float64)
    if (
        not np.all(np.isfinite(raw))
        or np.any(raw != np.round(raw))
        or np.any(raw < 0)
        or np.any(raw >= 2**63)  # would wrap to a negative int64
    ):
        raise ConfigError(f"method.path={path}: the index column must hold integers in [0, 2**63)")
    index = raw.astype(np.int64)
    unique, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise ConfigError(
            f"method.path={path}: {dup.size} indices appear more than once (first: {int(dup[0])})"
        )
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    labels = table["label"].to_numpy(dtype=np.int64) if "label" in table else None
    return index, values, labels


def scores_for(file: ScoreFile, path: str, ctx: ScoreContext) -> np.ndarray:
    """The scores of the run's examples, after checking the file fits the run's data."""
    n_full = ctx.source_n_train or ctx.n
    fingerprint = ctx.source_fingerprint or ctx.data_fingerprint
    data = file.meta.get("data") or {}
    theirs = data.get("source_fingerprint") or data.get("fingerprint")
    if theirs and theirs != fingerprint:
        raise ConfigError(
            f"method.path={path}: scores of another data set (fingerprint {theirs[:12]}... of "
            f"{data.get('name')!r}); this run's data has {fingerprint[:12]}..."
        )
    if not file.keyed and file.index.size != n_full:
        raise ConfigError(
            f"method.path={path}: {file.index.size} scores but the data set has {n_full} "
            "training examples (one score per example, in original order)"
        )
    if file.index.size and int(file.index.max()) >= n_full:
        raise ConfigError(
            f"method.path={path}: index {int(file.index.max())} is outside the {n_full} "
            "training examples of the data set"
        )
    position = np.full(n_full, -1, dtype=np.int64)
    position[file.index] = np.arange(file.index.size)
    wanted = ctx.original_index
    rows = position[wanted]
    missing = rows < 0
    if missing.any():
        max_train = _exported_data(file.meta).get("max_train")
        raise ConfigError(
            f"method.path={path}: no score for {int(missing.sum())} of the run's "
            f"{wanted.size} training examples (first: original index {int(wanted[missing][0])}); "
            f"the file covers {file.index.size} of {n_full}"
            + (f" (exported with data.max_train={max_train})" if max_train else "")
        )
    if file.labels is not None:
        differ = file.labels[rows] != ctx.labels
        if differ.any():
            data = _exported_data(file.meta)
            noise = ", ".join(
                f"data.{k}={data.get(k)}" for k in ("label_noise", "label_noise_seed")
            )
            raise ConfigError(
                f"method.path={path}: {int(differ.sum())} of the run's labels differ from "
                f"those the scores were computed with (exported with {noise}); use the "
                "same label noise"
            )
    return file.scores[rows]


def _exported_data(meta: dict[str, Any]) -> dict[str, Any]:
    """The data config an export was computed with ({} for a file from elsewhere)."""
    return (meta.get("config") or {}).get("data") or {}
