"""Our cells beside the accuracies the papers report (`analysis/references/*.csv`).

A reference file has one row per reported number: method (our leaderboard row name), data,
model, fraction (removed; 0 with method `full`), mean and std in percent (std empty when
the source gives none) and source (paper and table/figure, or official README). Only
numbers read in a source are entered; a cell is compared against every table (protocol)
of the same data and model that has it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisError
from analysis.leaderboard import Row, Table
from analysis.render import fraction_header, tex, title
from analysis.stats import Summary

REFERENCES = Path(__file__).resolve().parent / "references"
COLUMNS = ("method", "data", "model", "fraction", "mean", "std", "source")


@dataclass(frozen=True)
class Comparison:
    method: str
    data: str
    model: str
    fraction: float
    theirs: float
    their_std: float
    source: str
    table: str | None = None
    ours: Summary | None = None

    @property
    def difference(self) -> float:
        return math.nan if self.ours is None else self.ours.mean - self.theirs

    @property
    def within(self) -> bool | None:
        """|ours - theirs| <= their std; None without their std or without our cell."""
        if self.ours is None or math.isnan(self.their_std):
            return None
        return abs(self.difference) <= self.their_std


def reference_path(name: str) -> Path:
    """A reference by name (analysis/references/NAME.csv) or by path."""
    path = Path(name)
    if path.suffix == ".csv" and path.exists():
        return path
    found = REFERENCES / f"{name}.csv"
    if not found.exists():
        known = ", ".join(sorted(p.stem for p in REFERENCES.glob("*.csv"))) or "(none)"
        raise AnalysisError(f"--reference {name!r} is neither a CSV file nor one of: {known}")
    return found


def load_reference(name: str) -> pd.DataFrame:
    path = reference_path(name)
    frame = pd.read_csv(path, comment="#", dtype={"method": str, "data": str, "model": str})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise AnalysisError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("fraction", "mean", "std"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    bad = frame[frame["fraction"].isna() | frame["mean"].isna() | frame["source"].isna()]
    if not bad.empty:
        raise AnalysisError(
            f"{path}: row {int(bad.index[0]) + 2} needs a fraction, a mean and a source"
        )
    if not frame["fraction"].between(0.0, 1.0, inclusive="left").all():
        raise AnalysisError(f"{path}: fractions (removed) must lie in [0, 1)")
    return frame


def compare(tables: list[Table], reference: pd.DataFrame) -> list[Comparison]:
    """Every reference row against each table of its data and model (or alone, if none)."""
    out = []
    for ref in reference.itertuples(index=False):
        theirs = {
            "method": ref.method,
            "data": ref.data,
            "model": ref.model,
            "fraction": float(ref.fraction),
            "theirs": float(ref.mean),
            "their_std": float(ref.std),
            "source": str(ref.source),
        }
        matches = [
            (table, cell)
            for table in tables
            if table.data == ref.data and table.model == ref.model
            for cell in [_cell(table, ref.method, float(ref.fraction))]
            if cell is not None
        ]
        if not matches:
            out.append(Comparison(**theirs))
        for table, cell in matches:
            out.append(Comparison(**theirs, table=title(table), ours=cell))
    return out


def _cell(table: Table, method: str, fraction: float) -> Summary | None:
    rows: list[Row] = table.full if method == "full" else table.rows
    for row in rows:
        if row.name == method:
            key = 0.0 if method == "full" else fraction
            for f, summary in row.cells.items():
                if math.isclose(f, key, abs_tol=1e-9):
                    return summary
    return None


HEAD = ["method", "data", "model", "removed", "ours", "theirs", "difference", "within std"]
CAPTION = (
    "Our final test accuracy (%, mean ± std over our seeds) beside the papers' reported "
    "numbers (mean ± std where given); difference = ours - theirs (percentage points); "
    "within std: |difference| <= their std. Sources below."
)


def render_comparison(comparisons: list[Comparison], fmt: str, digits: int = 2) -> str:
    if fmt not in ("md", "latex"):
        raise AnalysisError(f"--format {fmt!r} is not md or latex for compare")
    latex = fmt == "latex"
    pm = "$\\pm$" if latex else "±"
    lines = []
    for c in comparisons:
        ours = "no run" if c.ours is None else _value(c.ours.mean, c.ours.std, digits, pm)
        if c.ours is not None:
            ours += f" (n={c.ours.n})"
        diff = "—" if c.ours is None else f"{c.difference:+.{digits}f}"
        within = {None: "—", True: "yes", False: "no"}[c.within]
        cells = [
            c.method,
            c.data,
            c.model,
            fraction_header(c.fraction),
            ours,
            _value(c.theirs, c.their_std, digits, pm),
            diff,
            within,
        ]
        lines.append(cells)
    sources = sorted({(c.method, c.data, c.model, c.source) for c in comparisons})
    tables = sorted({c.table for c in comparisons if c.table})
    if latex:
        body = [" & ".join(tex(x) if pm not in x else x for x in row) + " \\\\" for row in lines]
        return "\n".join(
            [
                "\\begin{table}[t]",
                "\\centering",
                f"\\caption{{{tex(CAPTION)}}}",
                "\\label{tab:reference-comparison}",
                "\\begin{tabular}{llllcccc}",
                "\\toprule",
                " & ".join(tex(h) for h in HEAD) + " \\\\",
                "\\midrule",
                *body,
                "\\bottomrule",
                "\\end{tabular}",
                "\\end{table}",
                *[f"% {tex(m)} / {tex(d)} / {tex(mo)}: {tex(s)}" for m, d, mo, s in sources],
            ]
        )
    md = [CAPTION, "", _md(HEAD), _md(["---"] * 4 + ["---:"] * 3 + ["---"])]
    md += [_md(row) for row in lines]
    md += ["", "Our tables: " + ("; ".join(tables) if tables else "none matched") + "."]
    md += ["", "Sources:", *[f"- {m}, {d}, {mo}: {s}" for m, d, mo, s in sources]]
    return "\n".join(md) + "\n"


def _value(mean: float, std: float, digits: int, pm: str) -> str:
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} {pm} {std:.{digits}f}"


def _md(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
