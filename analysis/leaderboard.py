"""Leaderboard tables: one per (data, model, protocol), methods x removed fractions.

Runs of different protocols (data, model or training config) never share a table, and
runs of one method label with different options or prune settings never share a row:
they become rows named by the options that tell them apart.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from analysis.collect import FULL
from analysis.errors import AnalysisError
from analysis.stats import Difference, Summary, difference, summarize
from benchmarks.seeding import CELL_SEED
from benchmarks.wandb_logger import flatten

BASELINE = "random"
# Protocol keys every table title states; notes name only the other differences.
SHOWN_KEYS = ("train.epochs", "train.budget")


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    scale: float
    higher_is_better: bool


METRICS = {
    m.key: m
    for m in (
        Metric("test_acc", "final test accuracy (%)", 100.0, True),
        Metric("test_loss", "final test loss", 1.0, False),
        Metric("val_acc", "final validation accuracy (%)", 100.0, True),
        Metric("val_loss", "final validation loss", 1.0, False),
        Metric("train_acc", "final training accuracy (%) on the kept subset", 100.0, True),
        Metric("train_loss", "final training loss on the kept subset", 1.0, False),
    )
}


# Actual minus nominal removed fraction beyond which a row is flagged (rounding is ~1/n).
OFF_NOMINAL = 0.005


@dataclass
class Row:
    """One method variant: per removed fraction, its value per seed and their summary."""

    name: str
    method_name: str
    balance: bool
    values: dict[float, dict[int, float]]
    score_epoch: float | None
    proxy_epochs: float
    proxy_trainings: float
    score_seconds: float
    # how the seeds drew the scores: "per seed" (method.proxy.seed=cell), "shared" (one
    # fixed proxy seed for every cell), None (no proxy training)
    scores_drawn: str | None = None
    removed: dict[float, float] = field(default_factory=dict)
    # mean total compute (example-passes, benchmarks.compute) and its wall seconds per
    # fraction, where the records state them
    compute: dict[float, float] = field(default_factory=dict)
    compute_seconds: dict[float, float] = field(default_factory=dict)
    dynamic: bool = False
    cells: dict[float, Summary] = field(default_factory=dict)
    deltas: dict[float, Difference] = field(default_factory=dict)
    best: set[float] = field(default_factory=set)
    baseline: str | None = None


@dataclass
class Table:
    data: str
    model: str
    protocol: str
    budget: str
    epochs: int
    note: str
    metric: Metric
    fractions: list[float]
    rows: list[Row]
    full: list[Row]
    seeds: list[int]
    usual_n: int

    @property
    def ci_kinds(self) -> set[str]:
        return {d.kind for row in self.rows for d in row.deltas.values()}

    @property
    def off_nominal(self) -> list[Row]:
        """Rows whose runs removed another fraction than the column says (dynamic pruning)."""
        return [
            r
            for r in self.rows
            if any(abs(removed - f) > OFF_NOMINAL for f, removed in r.removed.items())
        ]

    @property
    def score_epochs(self) -> dict[str, float]:
        return {r.name: r.score_epoch for r in self.rows if r.score_epoch is not None}


def build_tables(
    runs: pd.DataFrame,
    metric: str = "test_acc",
    data: Sequence[str] = (),
    models: Sequence[str] = (),
    digits: int = 2,
) -> list[Table]:
    """Tables of finished, de-duplicated runs (`Collection.runs`), in a stable order."""
    if metric not in METRICS:
        raise AnalysisError(
            f"--metric {metric!r} is not a record metric; use one of {', '.join(METRICS)}"
        )
    runs = _only(runs, "data", data)
    runs = _only(runs, "model", models)
    runs = runs[runs[metric].notna()]
    if runs.empty:
        hint = " (validation metrics need data.val_size > 0)" if metric.startswith("val") else ""
        raise AnalysisError(f"no finished run has the metric {metric!r}{hint}")
    tables = []
    for _, same in runs.groupby(["data", "model"], sort=True):
        configs = same.drop_duplicates("protocol").set_index("protocol")["protocol_config"]
        notes = _differences(configs, ignore=SHOWN_KEYS)
        ordered = same.sort_values(["budget", "epochs", "protocol"])
        for protocol in ordered["protocol"].unique():
            group = same[same["protocol"] == protocol]
            tables.append(_table(group, METRICS[metric], notes.get(protocol, ""), digits))
    return tables


def _only(runs: pd.DataFrame, column: str, wanted: Sequence[str]) -> pd.DataFrame:
    if not wanted:
        return runs
    unknown = sorted(set(wanted) - set(runs[column]))
    if unknown:
        have = ", ".join(sorted(runs[column].unique()))
        raise AnalysisError(
            f"--{column} {', '.join(unknown)}: no finished runs; the runs have {have}"
        )
    return runs[runs[column].isin(wanted)]


def _table(group: pd.DataFrame, metric: Metric, note: str, digits: int) -> Table:
    first = group.iloc[0]
    is_full = group["method_name"] == FULL
    rows = _rows(group[~is_full], metric)
    full = _rows(group[is_full], metric)
    for row in [*rows, *full]:
        row.cells = {f: summarize(list(v.values())) for f, v in row.values.items()}
    _mark_best(rows, metric, digits)
    _add_deltas(rows)
    counts = Counter(s.n for row in [*rows, *full] for s in row.cells.values())
    return Table(
        data=str(first["data"]),
        model=str(first["model"]),
        protocol=str(first["protocol"]),
        budget=str(first["budget"]),
        epochs=int(first["epochs"]),
        note=note,
        metric=metric,
        fractions=sorted({f for row in rows for f in row.values}),
        rows=rows,
        full=full,
        seeds=sorted(int(s) for s in group["seed"].unique()),
        usual_n=max(counts, key=lambda n: (counts[n], n)),
    )


def _rows(runs: pd.DataFrame, metric: Metric) -> list[Row]:
    """Rows by (label, variant); a label with several variants gets their differences."""
    names: dict[tuple[str, str], str] = {}
    for label, same in runs.groupby("method", sort=True):
        variants = same.drop_duplicates("variant").set_index("variant")["variant_config"]
        for variant, diff in _differences(variants).items():
            names[(str(label), variant)] = f"{label} ({diff})" if diff else str(label)
    rows = []
    for (label, variant), same in runs.groupby(["method", "variant"], sort=True):
        values: dict[float, dict[int, float]] = {}
        for run in same.itertuples():
            fraction = round(float(run.fraction), 6)
            values.setdefault(fraction, {})[int(run.seed)] = (
                float(getattr(run, metric.key)) * metric.scale
            )
        score_epochs = same["score_epoch"].dropna().unique()
        removed = same.dropna(subset=["removed"]).groupby("fraction")["removed"].mean()
        compute = _means(same, "compute")
        seconds = _means(same, "compute_seconds")
        rows.append(
            Row(
                name=names[(str(label), str(variant))],
                method_name=str(same["method_name"].iloc[0]),
                balance=bool(same["balance"].iloc[0]),
                values=dict(sorted(values.items())),
                score_epoch=float(score_epochs[0]) if len(score_epochs) else None,
                proxy_epochs=float(same["proxy_epochs"].mean()),
                proxy_trainings=float(same["proxy_trainings"].mean()),
                score_seconds=float(same["score_seconds"].mean()),
                scores_drawn=scores_drawn(same),
                removed={round(float(f), 6): float(r) for f, r in removed.items()},
                compute=compute,
                compute_seconds=seconds,
                dynamic=bool(same["dynamic"].any()),
            )
        )
    return sorted(rows, key=lambda r: (r.method_name != BASELINE, r.name))


def scores_drawn(runs: pd.DataFrame) -> str | None:
    """How the seeds drew the scores: "per seed" when every proxy seed was the cell's (`cell`),
    "shared" when every one was fixed, "mixed" otherwise; None without proxy trainings."""
    seeds = runs["proxy_seed"].dropna() if "proxy_seed" in runs else pd.Series([], dtype=object)
    if seeds.empty:
        return None
    kinds = {"per seed" if s == CELL_SEED else "shared" for s in seeds}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _means(runs: pd.DataFrame, column: str) -> dict[float, float]:
    """Mean of `column` per fraction, over the runs that state it."""
    if column not in runs:
        return {}
    found = runs.dropna(subset=[column]).groupby("fraction")[column].mean()
    return {round(float(f), 6): float(v) for f, v in found.items()}


def _mark_best(rows: list[Row], metric: Metric, digits: int) -> None:
    """Best mean per fraction, as displayed: rows that tie after rounding are all best."""
    sign = 1 if metric.higher_is_better else -1
    for fraction in {f for row in rows for f in row.cells}:
        shown = {r.name: round(r.cells[fraction].mean, digits) for r in rows if fraction in r.cells}
        top = max(sign * v for v in shown.values())
        for row in rows:
            if row.name in shown and sign * shown[row.name] == top:
                row.best.add(fraction)


def _add_deltas(rows: list[Row]) -> None:
    """Difference to random at the same fraction; a balanced method vs balanced random."""
    baselines = [r for r in rows if r.method_name == BASELINE]
    for row in rows:
        if row.method_name == BASELINE or not baselines:
            continue
        same_balance = [b for b in baselines if b.balance == row.balance]
        base = (same_balance or baselines)[0]
        row.baseline = base.name
        for fraction, values in row.values.items():
            if fraction in base.values:
                row.deltas[fraction] = difference(values, base.values[fraction])


def _differences(configs: Mapping[str, str], ignore: Sequence[str] = ()) -> dict[str, str]:
    """For each id, the "key=value" pairs where its config differs from the others'."""
    flat = {key: flatten(json.loads(text)) for key, text in configs.items()}
    keys = sorted({k for f in flat.values() for k in f} - set(ignore))
    differing = [k for k in keys if len({json.dumps(f.get(k)) for f in flat.values()}) > 1]
    return {key: ", ".join(f"{k}={_short(f.get(k))}" for k in differing) for key, f in flat.items()}


def _short(value: object) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:g}"
    return str(value)
