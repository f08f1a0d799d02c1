"""Metric vs removed fraction: one panel per leaderboard table, one line per method.

Drawn on a bare `Figure` (no pyplot), so no display or global backend is involved.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.leaderboard import Table
from analysis.render import title

COLUMNS = 3
# Ten colours, then the same colours with another line style and marker: up to 40 methods
# stay distinguishable in print.
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def plot(tables: list[Table], stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf; return their paths."""
    cols = min(COLUMNS, len(tables))
    rows = math.ceil(len(tables) / cols)
    fig = Figure(figsize=(4.8 * cols + 1.6, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    names = sorted({row.name for table in tables for row in table.rows})
    styles = {name: line_style(i) for i, name in enumerate(names)}
    for ax, table in zip(axes.flat, tables, strict=False):
        _panel(ax, table, styles)
    for ax in axes.flat[len(tables) :]:
        ax.set_visible(False)
    # one legend beside the panels, so that no line is hidden under it
    return save_with_legend(fig, list(axes.flat[: len(tables)]), stem)


def save_with_legend(fig: Figure, axes: list[Axes], stem: Path) -> list[Path]:
    """One legend for all panels (each label once), then `stem`.png and .pdf for a paper."""
    legend = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize=7)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + suffix) for suffix in (".png", ".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def line_style(i: int) -> dict[str, str]:
    """Colour, line style and marker of the i-th method (alphabetical, same in every panel)."""
    group = (i // 10) % len(LINESTYLES)
    return {"color": f"C{i % 10}", "linestyle": LINESTYLES[group], "marker": MARKERS[group]}


def _panel(ax: Axes, table: Table, styles: dict[str, dict[str, str]]) -> None:
    """One style per method across panels; the x ticks are the fractions that were run."""
    for row in table.rows:
        fractions = sorted(row.cells)
        x = np.array([100 * f for f in fractions])
        mean = np.array([row.cells[f].mean for f in fractions])
        std = np.nan_to_num(np.array([row.cells[f].std for f in fractions]))
        style = styles[row.name]
        ax.plot(x, mean, markersize=3, label=row.name, **style)
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
    for row in table.full:
        full = row.cells[0.0]
        label = "full data" if row.name == "full" else f"full data ({row.name})"
        ax.axhline(full.mean, color="black", linestyle="--", linewidth=1, label=label)
        if not math.isnan(full.std):
            ax.axhspan(full.mean - full.std, full.mean + full.std, color="black", alpha=0.08)
    ax.set_xticks([100 * f for f in table.fractions])
    ax.set_title(title(table), fontsize=9)
    ax.set_xlabel("removed fraction (%)")
    ax.set_ylabel(table.metric.title)
    ax.grid(alpha=0.3)
