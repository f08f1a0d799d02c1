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


def plot(tables: list[Table], stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf; return their paths."""
    cols = min(COLUMNS, len(tables))
    rows = math.ceil(len(tables) / cols)
    fig = Figure(figsize=(4.8 * cols, 3.6 * rows), layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False)
    names = sorted({row.name for table in tables for row in table.rows})
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for ax, table in zip(axes.flat, tables, strict=False):
        _panel(ax, table, colors)
    for ax in axes.flat[len(tables) :]:
        ax.set_visible(False)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + suffix) for suffix in (".png", ".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def _panel(ax: Axes, table: Table, colors: dict[str, str]) -> None:
    """One color per method across panels; the x ticks are the fractions that were run."""
    for row in table.rows:
        fractions = sorted(row.cells)
        x = np.array([100 * f for f in fractions])
        mean = np.array([row.cells[f].mean for f in fractions])
        std = np.nan_to_num(np.array([row.cells[f].std for f in fractions]))
        color = colors[row.name]
        ax.plot(x, mean, marker="o", markersize=3, color=color, label=row.name)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
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
    ax.legend(fontsize=7)
