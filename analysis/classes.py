"""How the kept sets split over the classes: per method and removed fraction, the examples
kept of each class (mean over seeds), from the records' `selection.kept_per_class`.

Scores that keep the hardest examples can empty the easy classes at high removal (Data
Diet's EL2N on 10,000 CIFAR-10 images kept 117 automobiles against 983 cats of 1,000
each); this table shows it beside the accuracies, and `prune.balance=true` rows beside
the unbalanced ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError


def class_count_tables(runs: pd.DataFrame, digits: int = 0) -> str:
    """Markdown: per (data, model, protocol), one row per method variant and removed
    fraction with the mean kept count of each class, the smallest and largest, and their
    ratio. Runs without per-class counts (dynamic methods, full data) are left out."""
    static = runs[runs["kept_per_class"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    static = static[static["fraction"] > 0]
    if static.empty:
        raise AnalysisError("no finished static run records its kept examples per class")
    blocks = []
    for (data, model, protocol), table in static.groupby(["data", "model", "protocol"]):
        classes = len(table["kept_per_class"].iloc[0])
        head = [
            "method",
            "removed",
            "seeds",
            *(f"c{c}" for c in range(classes)),
            "min",
            "max",
            "max / min",
        ]
        lines = [
            f"### {data} / {model} (protocol {protocol}): kept examples per class, mean over seeds",
            "",
            "| " + " | ".join(head) + " |",
            "| --- | ---: | ---: |" + " ---: |" * (classes + 3),
        ]
        keys = ["method", "balance", "variant", "fraction"]
        for (method, balance, _, fraction), cell in table.groupby(keys, sort=True):
            counts = np.mean(np.array(cell["kept_per_class"].tolist(), dtype=float), axis=0)
            low, high = counts.min(), counts.max()
            name = f"{method} (balanced)" if balance else str(method)
            ratio = "∞" if low == 0 else f"{high / low:.2f}"
            cells = [f"{v:.{digits}f}" for v in counts]
            lines.append(
                f"| {name} | {100 * fraction:g}% | {len(cell)} | "
                + " | ".join([*cells, f"{low:.{digits}f}", f"{high:.{digits}f}", ratio])
                + " |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
