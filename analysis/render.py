"""Leaderboard tables as Markdown, LaTeX (booktabs) or one long CSV."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pandas as pd

from analysis.errors import AnalysisError
from analysis.leaderboard import BASELINE, Row, Table
from analysis.stats import Difference, Summary

FORMATS = ("md", "latex", "csv")
BUDGETS = {
    "iterations": "as many SGD steps as full-data training",
    "epochs": "the same epochs over the kept subset, so fewer steps",
}
WELCH_MARK = "†"


def render(tables: list[Table], fmt: str, digits: int = 2) -> str:
    if fmt == "md":
        return "\n\n".join(markdown(t, digits) for t in tables) + "\n"
    if fmt == "latex":
        return "\n\n".join(latex(t, digits) for t in tables) + "\n"
    if fmt == "csv":
        return long_frame(tables).to_csv(index=False)
    raise AnalysisError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def title(table: Table) -> str:
    note = f", {table.note}" if table.note else ""
    return f"{table.data} / {table.model}: {table.budget} budget, {_epochs(table)}{note}"


def _epochs(table: Table) -> str:
    return f"{table.epochs} epoch" + ("" if table.epochs == 1 else "s")


def fraction_header(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def caption(table: Table, digits: int, pm: str = "±") -> str:
    """The protocol in words: what is averaged, over which seeds, trained how."""
    seeds = ", ".join(str(s) for s in table.seeds)
    if len(table.seeds) == table.usual_n:
        over = f"{table.usual_n} seeds ({seeds})"
    else:
        over = f"{table.usual_n} seeds per cell unless n is shown (seeds {seeds})"
    parts = [
        f"{table.data}, {table.model}: {table.metric.title} after training on the kept subset, "
        f"mean {pm} std over {over}; bold: best per column "
        f"({'highest' if table.metric.higher_is_better else 'lowest'}).",
        f"Protocol: {_epochs(table)}, {table.budget} budget "
        f"({BUDGETS.get(table.budget, 'see the records')})"
        + (f"; {table.note}" if table.note else "")
        + ".",
    ]
    if table.score_epochs:
        epochs = ", ".join(f"{name} {e:g}" for name, e in table.score_epochs.items())
        parts.append(f"Score epoch: {epochs}.")
    parts += _scores_drawn(table)
    for row in table.full:
        value = _summary(row.cells[0.0], digits, table.usual_n, pm)
        parts.append(f"{_full_name(row)} (no pruning): {value}.")
    for row in table.off_nominal:
        shares = ", ".join(
            f"{100 * removed:.1f}% at {fraction_header(f)}" for f, removed in row.removed.items()
        )
        parts.append(
            f"{row.name} actually removed {shares} of the example presentations "
            "(the columns give the nominal fraction)."
        )
    parts.append(
        "Cost of the scores: proxy training epochs and seconds to compute them "
        "(cached scores count what they cost when computed)."
    )
    return " ".join(parts)


SCORES_DRAWN = {
    "per seed": "scores drawn per seed (method.proxy.seed=cell: each seed trains its own "
    "proxies), so the spread and the intervals cover the scores' randomness and the retraining",
    "shared": "scores shared (one draw, a fixed method.proxy.seed, reused by every seed and "
    "fraction), so the spread and the intervals cover the retraining only, not the scores' "
    "randomness",
    "mixed": "scores drawn per seed by some runs and shared by others",
}


def _scores_drawn(table: Table) -> list[str]:
    """Which randomness the spread covers, per kind of row (rows without proxies aside)."""
    kinds: dict[str, list[str]] = {}
    for row in table.rows:
        if row.scores_drawn is not None:
            kinds.setdefault(row.scores_drawn, []).append(row.name)
    if len(kinds) == 1:
        (kind,) = kinds
        return [f"Proxy-trained methods: {SCORES_DRAWN[kind]}."]
    return [f"{', '.join(names)}: {SCORES_DRAWN[kind]}." for kind, names in sorted(kinds.items())]


def _full_name(row: Row) -> str:
    return "Full data" if row.name == "full" else f"Full data ({row.name})"


def delta_caption(table: Table) -> str:
    unit = " (percentage points)" if table.metric.scale == 100 else ""
    kinds = table.ci_kinds
    if not kinds:
        return f"No {BASELINE} baseline at these fractions, so no difference to it."
    if kinds == {"paired"}:
        how = "paired t interval over matching seeds"
    elif kinds == {"welch"}:
        how = "Welch t interval (the seeds differ)"
    else:
        how = f"paired t interval over matching seeds; {WELCH_MARK} Welch t where the seeds differ"
    return (
        f"Difference to {BASELINE} at the same removed fraction{unit}, "
        f"with its 95% confidence interval: {how}."
    )


def _summary(s: Summary, digits: int, usual_n: int, pm: str) -> str:
    text = f"{s.mean:.{digits}f}"
    if not math.isnan(s.std):
        text += f" {pm} {s.std:.{digits}f}"
    return text + (f" (n={s.n})" if s.n != usual_n else "")


def _delta(d: Difference, digits: int, mark: bool, welch_mark: str = WELCH_MARK) -> str:
    text = f"{d.delta:+.{digits}f}"
    if not math.isnan(d.low):
        text += f" [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
    return text + (welch_mark if mark and d.kind == "welch" else "")


def _cost(row: Row) -> list[str]:
    epochs = "—" if math.isnan(row.proxy_epochs) else f"{row.proxy_epochs:g}"
    seconds = "—" if math.isnan(row.score_seconds) else f"{row.score_seconds:.1f}"
    return [epochs, seconds]


def _cells(table: Table, row: Row, digits: int, pm: str, bold: Callable[[str], str]) -> list[str]:
    out = []
    for f in table.fractions:
        if f not in row.cells:
            out.append("—")
            continue
        text = _summary(row.cells[f], digits, table.usual_n, pm)
        out.append(bold(text) if f in row.best else text)
    return out


def _delta_cells(table: Table, row: Row, digits: int, welch_mark: str) -> list[str]:
    mixed = len(table.ci_kinds) > 1
    return [
        _delta(row.deltas[f], digits, mixed, welch_mark) if f in row.deltas else "—"
        for f in table.fractions
    ]


def markdown(table: Table, digits: int) -> str:
    head = ["method", *(fraction_header(f) for f in table.fractions), "proxy epochs", "score s"]
    lines = [f"### {title(table)}", "", caption(table, digits), "", *_md_table(head)]
    for row in table.rows:
        cells = _cells(table, row, digits, "±", lambda s: f"**{s}**")
        lines.append(_md_line([row.name, *cells, *_cost(row)]))
    compared = [r for r in table.rows if r.deltas]
    if compared:
        lines += ["", delta_caption(table), ""]
        lines += _md_table(["method", *(fraction_header(f) for f in table.fractions)])
        for row in compared:
            lines.append(_md_line([row.name, *_delta_cells(table, row, digits, WELCH_MARK)]))
    return "\n".join(lines)


def _md_table(head: list[str]) -> list[str]:
    return [_md_line(head), _md_line(["---", *["---:"] * (len(head) - 1)])]


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def latex(table: Table, digits: int) -> str:
    pm = "$\\pm$"
    k = len(table.fractions)
    head = ["Method", *(tex(fraction_header(f)) for f in table.fractions), "Proxy ep.", "Score s"]
    body = []
    for row in table.full:
        value = _summary(row.cells[0.0], digits, table.usual_n, pm)
        body.append(
            _tex_line([tex(_full_name(row)), f"\\multicolumn{{{k}}}{{c}}{{{value}}}", *_cost(row)])
        )
    if table.full:
        body.append("\\midrule")
    for row in table.rows:
        cells = _cells(table, row, digits, pm, lambda s: f"\\textbf{{{s}}}")
        body.append(_tex_line([tex(row.name), *cells, *_cost(row)]))
    label = re.sub(r"[^A-Za-z0-9]+", "-", f"{table.data}-{table.model}-{table.protocol}")
    out = [
        _tex_float(
            tex(caption(table, digits, "±")), f"tab:{label}", "l" + "c" * k + "rr", head, body
        )
    ]
    compared = [r for r in table.rows if r.deltas]
    if compared:
        delta_head = ["Method", *(tex(fraction_header(f)) for f in table.fractions)]
        rows = [
            _tex_line([tex(r.name), *_delta_cells(table, r, digits, "$^\\dagger$")])
            for r in compared
        ]
        text = tex(f"{table.data}, {table.model}, {_epochs(table)}, {table.budget} budget: ")
        text += tex(delta_caption(table)).replace(tex(WELCH_MARK), "$^\\dagger$")
        out.append(_tex_float(text, f"tab:{label}-delta", "l" + "c" * k, delta_head, rows))
    return "\n\n".join(out)


def _tex_float(text: str, label: str, spec: str, head: list[str], body: list[str]) -> str:
    return "\n".join(
        [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{text}}}",
            f"\\label{{{label}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            _tex_line(head),
            "\\midrule",
            *body,
            "\\bottomrule",
            "\\end{tabular}",
            "\\end{table}",
        ]
    )


def _tex_line(cells: list[str]) -> str:
    return " & ".join(cells) + " \\\\"


TEX_SPECIAL = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "±": "$\\pm$",
}


def tex(text: str) -> str:
    return "".join(TEX_SPECIAL.get(c, c) for c in text)


def long_frame(tables: list[Table]) -> pd.DataFrame:
    """One row per (table, method, fraction), full precision, for further analysis."""
    rows = []
    for t in tables:
        base = {
            "data": t.data,
            "model": t.model,
            "protocol": t.protocol,
            "budget": t.budget,
            "epochs": t.epochs,
            "protocol_note": t.note,
            "metric": t.metric.key,
        }
        for row in [*t.full, *t.rows]:
            for fraction, s in row.cells.items():
                d = row.deltas.get(fraction)
                rows.append(
                    {
                        **base,
                        "method": row.name,
                        "method_name": row.method_name,
                        "fraction": fraction,
                        "n": s.n,
                        "seeds": ";".join(str(x) for x in sorted(row.values[fraction])),
                        "removed_actual": row.removed.get(fraction, math.nan),
                        "mean": s.mean,
                        "std": s.std,
                        "best": fraction in row.best,
                        "baseline": row.baseline if d else None,
                        "delta": d.delta if d else math.nan,
                        "ci_low": d.low if d else math.nan,
                        "ci_high": d.high if d else math.nan,
                        "ci_kind": d.kind if d else None,
                        "score_epoch": row.score_epoch,
                        "proxy_epochs": row.proxy_epochs,
                        "proxy_trainings": row.proxy_trainings,
                        "score_seconds": row.score_seconds,
                    }
                )
    return pd.DataFrame(rows)
