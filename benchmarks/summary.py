"""The few lines a run prints: enough to read the result without opening the record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def changed_line(cell: Mapping[str, Any], reused_otherwise: str, what: str | None) -> str:
    """The line of a cell run again because its plugin code or an input file changed since
    the record it would have reused (`what`: which; None: the record predates the hashes)."""
    why = (
        f"{what} changed since {reused_otherwise}"
        if what is not None
        else f"{reused_otherwise} predates the hashes of plugin code and input files"
    )
    return f"{_title(cell)} | seed {cell['seed']}: {why}, the record reused otherwise; run again"


def _title(cell: Mapping[str, Any]) -> str:
    return (
        f"prunebench | {cell['data']} | {cell['model']} | {cell['method']} | "
        f"removed {cell['fraction']:.0%}"
    )


def summary_lines(record: Mapping[str, Any]) -> list[str]:
    cell = record["cell"]
    title = _title(cell)
    balanced = ", balanced" if cell["balance"] else ""
    title = f"{title} ({cell['keep']}{balanced}) | seed {cell['seed']}"
    if record.get("skipped"):
        return [f"{title}: skipped, {record['status']} record exists: {record['record_path']}"]
    sel, metrics, t = record["selection"], record["metrics"], record["timings"]
    if "dynamic" in sel:
        dyn = sel["dynamic"]
        kept = (
            f"dynamic: {dyn['seen_fraction']:.1%} of {sel['total']} train examples per pass, "
            f"{dyn['passes']} passes"
        )
    else:
        kept = f"kept {sel['kept']}/{sel['total']} train examples"
    val = f" | val acc {metrics['val_acc']:.4f}" if "val_acc" in metrics else ""
    stages = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")
    spread = record["env"].get("distributed") or {}
    ranks = f" x {spread['world_size']} ranks" if spread.get("world_size", 1) > 1 else ""
    return [
        title,
        f"  {kept}; {record['train']['steps']} steps ({cell['budget']} budget, "
        f"{cell['epochs']} epochs)",
        f"  test acc {metrics['test_acc']:.4f}  loss {metrics['test_loss']:.4f}{val}",
        f"  wall {t['total']:.1f} s ({stages}) on {record['env']['device']}{ranks}",
        f"  record {record['record_path']}",
    ]
