"""Score studies on `score.py` exports: do methods agree, do seeds agree, do scores find noise?

Every export holds one row per training example in the data set's original order. The
training set's positions are sorted original indices, so position p is row p, which is
how the flipped positions of the metadata are located (and checked against the labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

REQUIRED = ("index", "label", "score")
FORMATS = ("md", "csv")


@dataclass
class ScoreFile:
    path: Path
    name: str
    frame: pd.DataFrame
    meta: dict[str, Any]

    @property
    def run_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c.startswith("run_")]

    @property
    def flipped(self) -> np.ndarray:
        noise = (self.meta.get("data") or {}).get("label_noise") or {}
        return np.asarray(noise.get("flipped") or [], dtype=np.int64)


def load_scores(paths: list[Path]) -> list[ScoreFile]:
    """Exports of one data set; their rows must be the same examples in the same order."""
    files = [_load(p) for p in paths]
    first = files[0]
    for f in files[1:]:
        pair = f"{str(f.path)!r} and {str(first.path)!r}"
        if _fingerprint(f) != _fingerprint(first):
            raise AnalysisError(
                f"{pair} score different data sets (fingerprint {_fingerprint(f)} vs "
                f"{_fingerprint(first)}); compare exports of one data set"
            )
        if not f.frame["index"].equals(first.frame["index"]):
            raise AnalysisError(
                f"{pair} score different training examples ({len(f.frame)} vs "
                f"{len(first.frame)} rows); export them with the same data.val_size and subset"
            )
    names = [f.name for f in files]
    for f in files:
        if names.count(f.name) > 1:
            f.name = f"{f.name} ({f.path.name})"
    return files


def _load(path: Path) -> ScoreFile:
    meta_path = path.with_name(path.name + ".json")
    if path.suffix != ".csv":
        raise AnalysisError(f"{str(path)!r}: give the .csv exports of score.py (out=NAME.csv)")
    if not path.is_file() or not meta_path.is_file():
        missing = path if not path.is_file() else meta_path
        raise AnalysisError(
            f"{str(missing)!r} does not exist; score.py writes NAME.csv and NAME.csv.json"
        )
    frame = pd.read_csv(path)
    absent = [c for c in REQUIRED if c not in frame.columns]
    if absent:
        raise AnalysisError(
            f"{str(path)!r} lacks the column(s) {', '.join(absent)} of a score export"
        )
    meta = json.loads(meta_path.read_text())
    return ScoreFile(path, str(meta.get("method") or path.stem), frame, meta)


def _fingerprint(f: ScoreFile) -> str:
    return str((f.meta.get("data") or {}).get("fingerprint"))


def spearman(columns: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation between columns (Pearson of average ranks)."""
    from scipy.stats import rankdata  # scipy loads for the score tables only

    ranks = columns.apply(lambda c: pd.Series(rankdata(c), index=c.index))
    return ranks.corr(method="pearson")


def method_agreement(files: list[ScoreFile]) -> pd.DataFrame:
    return spearman(pd.DataFrame({f.name: f.frame["score"].to_numpy() for f in files}))


def run_agreement(f: ScoreFile) -> pd.DataFrame:
    return spearman(f.frame[f.run_columns])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (rank formula)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def noise_detection(files: list[ScoreFile]) -> pd.DataFrame:
    """AUROC of each score for the flipped examples of exports made with label noise."""
    rows = []
    for f in files:
        flipped = f.flipped
        if flipped.size == 0:
            continue
        true = np.asarray(f.meta["data"]["label_noise"]["true_labels"])
        labels = f.frame["label"].to_numpy()
        if flipped.max() >= labels.size or np.any(labels[flipped] == true):
            raise AnalysisError(
                f"{str(f.path)!r}: the flipped positions of its metadata do not match its rows"
            )
        positive = np.zeros(labels.size, dtype=bool)
        positive[flipped] = True
        score = f.frame["score"].to_numpy(dtype=float)
        rows.append(
            {
                "method": f.name,
                "auroc": auroc(score, positive),
                "flipped": flipped.size,
                "n": labels.size,
            }
        )
    return pd.DataFrame(rows, columns=["method", "auroc", "flipped", "n"])


def report(files: list[ScoreFile], fmt: str = "md", digits: int = 3) -> str:
    if fmt not in FORMATS:
        raise AnalysisError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    methods = method_agreement(files)
    runs = {f.name: run_agreement(f) for f in files if len(f.run_columns) > 1}
    noise = noise_detection(files)
    if fmt == "csv":
        return _long(methods, runs, noise).to_csv(index=False)
    parts = [
        "## Spearman rank correlation between methods' scores (mean over runs)",
        _md_matrix(methods, digits),
    ]
    if runs:
        parts.append("## Spearman rank correlation between runs (seeds) of each method")
        summary = pd.DataFrame(
            [
                {
                    "method": name,
                    "runs": len(m),
                    "mean": _off_diagonal(m).mean(),
                    "min": _off_diagonal(m).min(),
                }
                for name, m in runs.items()
            ]
        )
        parts.append(_md_frame(summary, digits))
        for name, matrix in runs.items():
            parts += [f"### {name}", _md_matrix(matrix, digits)]
    if not noise.empty:
        parts += [
            "## Label-noise detection: AUROC of each score for the flipped examples "
            "(high score = flagged; 0.5 = chance)",
            _md_frame(noise, digits),
        ]
    return "\n\n".join(parts) + "\n"


def _off_diagonal(matrix: pd.DataFrame) -> np.ndarray:
    values = matrix.to_numpy()
    return values[~np.eye(len(values), dtype=bool)]


def _long(
    methods: pd.DataFrame, runs: dict[str, pd.DataFrame], noise: pd.DataFrame
) -> pd.DataFrame:
    rows = [
        {"kind": "spearman_methods", "method": "", "a": a, "b": b, "value": methods.loc[a, b]}
        for a, b in combinations(methods.columns, 2)
    ]
    for name, matrix in runs.items():
        rows += [
            {"kind": "spearman_runs", "method": name, "a": a, "b": b, "value": matrix.loc[a, b]}
            for a, b in combinations(matrix.columns, 2)
        ]
    rows += [
        {"kind": "auroc", "method": r.method, "a": "flipped", "b": "", "value": r.auroc}
        for r in noise.itertuples()
    ]
    return pd.DataFrame(rows, columns=["kind", "method", "a", "b", "value"])


def _md_matrix(matrix: pd.DataFrame, digits: int) -> str:
    return _md_frame(matrix.reset_index(names=""), digits)


def _md_frame(frame: pd.DataFrame, digits: int) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "—" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |"]
    lines.append("| " + " | ".join("---" for _ in frame.columns) + " |")
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)
