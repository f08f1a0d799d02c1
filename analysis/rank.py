"""Rankings across cells: which method is best overall, not in one table.

A cell is one (data, model, protocol, removed fraction) column of a leaderboard; a
method's value in it is its mean over seeds. Within each cell the methods are ranked
(1 = best, ties share their mean rank); the Friedman test asks whether the average
ranks differ more than chance would make them, and the Nemenyi post-hoc test which
pairs do, with the critical difference of Demšar (2006, "Statistical Comparisons of
Classifiers over Multiple Data Sets", JMLR 7): two methods whose average ranks differ
by less than CD = q_alpha sqrt(k (k + 1) / (6 N)) are not told apart. The statistics
come from scipy (Friedman, the studentized range) and scikit-posthocs (Nemenyi, the
critical-difference diagram).

The tests need every method in every cell (complete blocks): where some are missing,
the method or the cell with the largest share missing is left out, one at a time, and
the notes say which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.errors import AnalysisError
from analysis.leaderboard import Table
from analysis.render import fraction_header, tex

ALPHA = 0.05


@dataclass
class Ranking:
    """Average ranks over complete blocks, and the tests on them."""

    metric: str
    values: pd.DataFrame  # cells x methods: mean over seeds
    ranks: pd.DataFrame  # cells x methods: 1 = best
    friedman: float
    friedman_p: float
    iman_davenport: float
    iman_davenport_p: float
    nemenyi: pd.DataFrame  # methods x methods: p-values
    cd: float
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    by_seed: bool = False

    @property
    def average(self) -> pd.Series:
        return self.ranks.mean().sort_values(kind="stable")

    @property
    def n_cells(self) -> int:
        return len(self.ranks)

    @property
    def n_methods(self) -> int:
        return self.ranks.shape[1]


def cell_values(tables: list[Table], by_seed: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """cells x methods of the tables' means over seeds (NaN where a method did not run), or
    with `by_seed` one block per (cell, seed); rows removing another fraction than their
    column says are noted."""
    columns: dict[str, dict[str, float]] = {}
    notes = []
    for table in tables:
        sign = 1.0 if table.metric.higher_is_better else -1.0
        for row in table.rows:
            for fraction, summary in row.cells.items():
                cell = (
                    f"{table.data} / {table.model} / {table.protocol} / {fraction_header(fraction)}"
                )
                if not by_seed:
                    columns.setdefault(row.name, {})[cell] = sign * summary.mean
                    continue
                for seed, value in row.values[fraction].items():
                    columns.setdefault(row.name, {})[f"{cell} / seed {seed}"] = sign * value
        for row in table.off_nominal:
            notes.append(
                f"{row.name} ({table.data} / {table.model}) is ranked in its nominal columns "
                "but removed less (see the leaderboard's note)"
            )
    return pd.DataFrame(columns).sort_index(), notes


def complete_blocks(values: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The largest complete design found by leaving out, one at a time, the method or the
    cell with the largest share of missing values (a method first on a tie)."""
    notes = []
    while values.isna().any().any():
        by_method = values.isna().mean(axis=0)
        by_cell = values.isna().mean(axis=1)
        if by_method.max() >= by_cell.max():
            name = str(by_method.idxmax())
            ran = int(values[name].notna().sum())
            notes.append(f"left out {name}: it ran in {ran} of {len(values)} cells")
            values = values.drop(columns=name)
        else:
            cell = str(by_cell.idxmax())
            ran = int(values.loc[cell].notna().sum())
            notes.append(f"left out cell {cell}: {ran} of {values.shape[1]} methods ran in it")
            values = values.drop(index=cell)
    return values, notes


def rank(tables: list[Table], alpha: float = ALPHA, by_seed: bool = False) -> Ranking:
    import scikit_posthocs
    from scipy import stats

    values, notes = cell_values(tables, by_seed)
    values, left_out = complete_blocks(values)
    notes = left_out + notes
    if by_seed:
        notes.append(
            "blocks are (cell, seed): seeds of one cell share their data, so the tests "
            "assume more independence than the cells alone give"
        )
    k, n = values.shape[1], values.shape[0]
    if k < 3 or n < 2:
        raise AnalysisError(
            f"a ranking needs at least 3 methods in at least 2 common cells; the runs give "
            f"{k} method(s) in {n} cell(s)" + (f" ({'; '.join(left_out)})" if left_out else "")
        )
    # rank 1 = best: values are signed so that higher is better
    ranks = values.rank(axis=1, ascending=False, method="average")
    chi2, p = stats.friedmanchisquare(*(values[c].to_numpy() for c in values.columns))
    # Iman and Davenport's F, less conservative than chi^2 (Demšar 2006, eq. 2)
    f_stat = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) > chi2 else math.inf
    f_p = float(stats.f.sf(f_stat, k - 1, (k - 1) * (n - 1)))
    nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(values.to_numpy())
    nemenyi.index = nemenyi.columns = list(values.columns)
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return Ranking(
        metric=tables[0].metric.title,
        values=values,
        ranks=ranks,
        friedman=float(chi2),
        friedman_p=float(p),
        iman_davenport=float(f_stat),
        iman_davenport_p=f_p,
        nemenyi=nemenyi.loc[values.columns, values.columns],
        cd=float(q * math.sqrt(k * (k + 1) / (6 * n))),
        alpha=alpha,
        notes=notes,
        by_seed=by_seed,
    )


def summary_frame(r: Ranking) -> pd.DataFrame:
    """One row per method, best average rank first."""
    average = r.average
    wins = (r.ranks == 1).sum()
    best = average.index[0]
    return pd.DataFrame(
        {
            "method": average.index,
            "average_rank": average.to_numpy(),
            "cells": r.n_cells,
            "wins": [int(wins[m]) for m in average.index],
            "differs_from_best": [
                m != best and bool(r.nemenyi.loc[best, m] < r.alpha) for m in average.index
            ],
            "nemenyi_p_vs_best": [
                math.nan if m == best else float(r.nemenyi.loc[best, m]) for m in average.index
            ],
        }
    )


def describe(r: Ranking) -> str:
    return (
        f"{r.n_cells} {'(cell, seed) blocks' if r.by_seed else 'cells'} (data, model, "
        f"protocol, removed fraction), {r.n_methods} methods; rank 1 = best {r.metric}"
        f"{'' if r.by_seed else ', mean over seeds'}; ties share their mean rank. "
        f"Friedman chi2({r.n_methods - 1}) = {r.friedman:.3f}, p = {r.friedman_p:.3g}; "
        f"Iman-Davenport F({r.n_methods - 1}, {(r.n_methods - 1) * (r.n_cells - 1)}) = "
        f"{r.iman_davenport:.3f}, p = {r.iman_davenport_p:.3g}. Nemenyi critical difference "
        f"at alpha = {r.alpha:g}: CD = {r.cd:.3f} (average ranks closer than CD are not "
        "told apart)."
    )


def render_ranking(r: Ranking, fmt: str, digits: int = 2) -> str:
    frame = summary_frame(r)
    if fmt == "csv":
        frame = frame.assign(
            friedman_chi2=r.friedman,
            friedman_p=r.friedman_p,
            iman_davenport_f=r.iman_davenport,
            iman_davenport_p=r.iman_davenport_p,
            nemenyi_cd=r.cd,
            alpha=r.alpha,
        )
        return frame.to_csv(index=False)
    head = ["method", "average rank", "wins", f"Nemenyi p vs {frame.method.iloc[0]}"]
    rows = [
        [
            m,
            f"{a:.{digits}f}",
            str(w),
            "" if math.isnan(p) else f"{p:.3g}" + ("*" if d else ""),
        ]
        for m, a, w, p, d in zip(
            frame.method,
            frame.average_rank,
            frame.wins,
            frame.nemenyi_p_vs_best,
            frame.differs_from_best,
            strict=True,
        )
    ]
    caption = describe(r) + f" *: differs from the best at alpha = {r.alpha:g}."
    if fmt == "md":
        lines = ["### Ranking across cells", "", caption, ""]
        lines += ["| " + " | ".join(head) + " |", "| --- | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", *(f"- note: {note}" for note in r.notes)]
        return "\n".join(lines).rstrip() + "\n"
    if fmt == "latex":
        body = [" & ".join(tex(c) for c in row) + " \\\\" for row in rows]
        return (
            "\n".join(
                [
                    "\\begin{table}[t]",
                    "\\centering",
                    f"\\caption{{{tex(caption)}}}",
                    "\\label{tab:ranking}",
                    "\\begin{tabular}{lrrr}",
                    "\\toprule",
                    " & ".join(tex(h) for h in head) + " \\\\",
                    "\\midrule",
                    *body,
                    "\\bottomrule",
                    "\\end{tabular}",
                    "\\end{table}",
                ]
            )
            + "\n"
        )
    raise AnalysisError(f"format {fmt!r} is not one of md, latex, csv")


def plot_cd(r: Ranking, stem: Path) -> list[Path]:
    """The critical-difference diagram (scikit-posthocs): `stem`.png and `stem`.pdf."""
    import scikit_posthocs

    fig = Figure(figsize=(8, 1.2 + 0.28 * r.n_methods), layout="constrained")
    ax = fig.subplots()
    scikit_posthocs.critical_difference_diagram(
        r.average,
        r.nemenyi,
        ax=ax,
        alpha=r.alpha,
        cd=r.cd,
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
    )
    fig.suptitle(
        f"Average rank over {r.n_cells} cells (Friedman p = {r.friedman_p:.3g}; "
        f"Nemenyi CD = {r.cd:.2f} at alpha = {r.alpha:g})",
        fontsize=9,
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + suffix) for suffix in (".png", ".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths
