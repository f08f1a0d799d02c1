"""Accuracy against total compute: which runs no other run beats on both.

One point per (protocol, method variant, removed fraction) of a (data, model): its mean
metric over seeds against its mean total compute in example-passes of the trained
network (the record's `compute.total`: proxy trainings, score passes and the training
itself, `benchmarks.compute`). Static and dynamic methods share the axes, whatever
their protocol, and the full-data run is the reference point. A point is
Pareto-optimal when no other point costs at most as much and scores at least as well,
one of the two strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.errors import AnalysisError
from analysis.leaderboard import Table
from analysis.plot import save_with_legend
from analysis.render import fraction_header, tex


@dataclass(frozen=True)
class Point:
    data: str
    model: str
    name: str  # the leaderboard row's name, with the protocol where several share the axes
    method_name: str
    fraction: float
    removed: float
    value: float  # mean metric over seeds, in the metric's display scale
    n: int
    compute: float  # mean total compute, example-passes of the trained network
    seconds: float  # mean wall seconds of the same work
    dynamic: bool
    full: bool
    higher_is_better: bool

    def beats(self, other: Point) -> bool:
        """At most as costly and at least as good, one of the two strictly."""
        sign = 1 if self.higher_is_better else -1
        no_worse = self.compute <= other.compute and sign * self.value >= sign * other.value
        better = self.compute < other.compute or sign * self.value > sign * other.value
        return no_worse and better


def points(tables: list[Table]) -> tuple[list[Point], list[str]]:
    """Every (row, fraction) of the tables that states its compute; notes name the rest."""
    out, missing = [], []
    protocols: dict[tuple[str, str], set[str]] = {}
    for table in tables:
        protocols.setdefault((table.data, table.model), set()).add(table.protocol)
    for table in tables:
        several = len(protocols[(table.data, table.model)]) > 1
        where = f" [{table.budget} budget, {table.epochs} ep" + (
            f", {table.note}]" if table.note else "]"
        )
        for row, is_full in [(r, True) for r in table.full] + [(r, False) for r in table.rows]:
            for fraction, summary in row.cells.items():
                compute = row.compute.get(fraction, math.nan)
                name = row.name + (where if several else "")
                if not math.isfinite(compute):
                    missing.append(
                        f"{table.data} / {table.model}: {name} {fraction_header(fraction)}"
                    )
                    continue
                out.append(
                    Point(
                        data=table.data,
                        model=table.model,
                        name=name,
                        method_name=row.method_name,
                        fraction=fraction,
                        removed=row.removed.get(fraction, fraction),
                        value=summary.mean,
                        n=summary.n,
                        compute=compute,
                        seconds=row.compute_seconds.get(fraction, math.nan),
                        dynamic=row.dynamic,
                        full=is_full,
                        higher_is_better=table.metric.higher_is_better,
                    )
                )
    notes = []
    if missing:
        notes.append(
            f"left out {len(missing)} point(s) whose records state no compute (written before "
            f"records counted it): {'; '.join(missing)}"
        )
    if not out:
        raise AnalysisError("no run states its compute (records from before compute was counted)")
    return out, notes


def front(candidates: list[Point]) -> list[Point]:
    """The Pareto-optimal points of one (data, model), cheapest first: sorted by compute
    (best value first among equals), a point is optimal when it beats the best value of
    every cheaper point."""
    sign = 1 if candidates[0].higher_is_better else -1
    ordered = sorted(candidates, key=lambda p: (p.compute, -sign * p.value))
    optimal: list[Point] = []
    best: tuple[float, float] | None = None  # (signed value, compute) of the best so far
    for point in ordered:
        value = sign * point.value
        if best is None or value > best[0]:
            best = (value, point.compute)
        elif value < best[0] or point.compute > best[1]:
            continue  # a cheaper (or as cheap and better) point beats it
        optimal.append(point)  # the best so far, or its exact twin
    return optimal


def fronts(all_points: list[Point]) -> dict[tuple[str, str], list[Point]]:
    groups: dict[tuple[str, str], list[Point]] = {}
    for point in all_points:
        groups.setdefault((point.data, point.model), []).append(point)
    return {key: front(group) for key, group in sorted(groups.items())}


def front_frame(all_points: list[Point]) -> pd.DataFrame:
    """The Pareto-optimal rows, cheapest first per (data, model), with compute relative to
    the full-data run's where there is one."""
    rows = []
    for (data, model), optimal in fronts(all_points).items():
        full = [p for p in all_points if (p.data, p.model) == (data, model) and p.full]
        reference = full[0].compute if full else math.nan
        for p in optimal:
            rows.append(
                {
                    "data": data,
                    "model": model,
                    "method": p.name,
                    "fraction": p.fraction,
                    "removed_actual": p.removed,
                    "value": p.value,
                    "n": p.n,
                    "compute": p.compute,
                    "compute_vs_full": p.compute / reference if full else math.nan,
                    "wall_seconds": p.seconds,
                    "dynamic": p.dynamic,
                    "full_data": p.full,
                }
            )
    return pd.DataFrame(rows)


def render_front(all_points: list[Point], metric_title: str, fmt: str, digits: int = 2) -> str:
    frame = front_frame(all_points)
    if fmt == "csv":
        return frame.to_csv(index=False)
    head = ["method", "removed", metric_title, "compute (example-passes)", "x full", "wall s"]
    sections = []
    for (data, model), group in frame.groupby(["data", "model"], sort=True):
        body = [
            [
                r.method + (" (dynamic)" if r.dynamic else ""),
                "full data" if r.full_data else f"{100 * r.removed_actual:.1f}%",
                f"{r.value:.{digits}f}",
                f"{r.compute:,.0f}",
                "" if math.isnan(r.compute_vs_full) else f"{r.compute_vs_full:.2f}",
                "" if math.isnan(r.wall_seconds) else f"{r.wall_seconds:.1f}",
            ]
            for r in group.itertuples()
        ]
        caption = (
            f"{data} / {model}: the Pareto-optimal runs of {metric_title} against total compute "
            "(example-passes of the trained network: proxy trainings, score passes and "
            "training; mean over seeds), cheapest first; no other run costs at most as much "
            "and scores at least as well."
        )
        if fmt == "md":
            lines = [f"### {data} / {model}: Pareto front", "", caption, ""]
            lines += ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            sections.append("\n".join(lines))
        elif fmt == "latex":
            sections.append(
                "\n".join(
                    [
                        "\\begin{table}[t]",
                        "\\centering",
                        f"\\caption{{{tex(caption)}}}",
                        f"\\label{{tab:pareto-{data}-{model}}}",
                        "\\begin{tabular}{lrrrrr}",
                        "\\toprule",
                        " & ".join(tex(h) for h in head) + " \\\\",
                        "\\midrule",
                        *(" & ".join(tex(c) for c in row) + " \\\\" for row in body),
                        "\\bottomrule",
                        "\\end{tabular}",
                        "\\end{table}",
                    ]
                )
            )
        else:
            raise AnalysisError(f"format {fmt!r} is not one of md, latex, csv")
    return "\n\n".join(sections) + "\n"


def plot_pareto(all_points: list[Point], metric_title: str, stem: Path) -> list[Path]:
    """One panel per (data, model): every point, the front as a step line, the full-data
    run as a star; static methods as circles, dynamic ones as triangles; compute on a log
    axis. Writes `stem`.png and `stem`.pdf."""
    groups = fronts(all_points)
    names = sorted({p.name for p in all_points if not p.full})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig = Figure(figsize=(6.4 * len(groups) + 2.4, 4.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, ((data, model), optimal) in zip(axes, groups.items(), strict=True):
        mine = [p for p in all_points if (p.data, p.model) == (data, model)]
        for p in mine:
            if p.full:
                ax.scatter(p.compute, p.value, marker="*", s=220, c="black", zorder=4)
                ax.annotate(
                    "full data",
                    (p.compute, p.value),
                    fontsize=7,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
                continue
            ax.scatter(
                p.compute,
                p.value,
                marker="^" if p.dynamic else "o",
                c=colours[p.name],
                s=28,
                label=p.name,
                zorder=3,
                edgecolors="black" if p in optimal else "none",
            )
            ax.annotate(
                f"{100 * p.removed:.0f}%",
                (p.compute, p.value),
                fontsize=6,
                xytext=(3, -7),
                textcoords="offset points",
            )
        xs = [p.compute for p in optimal]
        ys = [p.value for p in optimal]
        ax.step(xs, ys, where="post", color="gray", linewidth=1, zorder=2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("total compute (example-passes of the trained network)")
        ax.set_ylabel(metric_title)
        ax.set_title(f"{data} / {model}", fontsize=10)
        ax.grid(alpha=0.3)
    return save_with_legend(fig, list(axes), stem)
