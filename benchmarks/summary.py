"""The few lines a run prints: enough to read the result without opening the record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def summary_lines(record: Mapping[str, Any]) -> list[str]:
    if record.get("skipped"):
        cell = record["cell"]
        return [
            f"prunebench | {cell['data']} | {cell['model']} | {cell['method']} | "
            f"removed {cell['fraction']:.0%} | seed {cell['seed']}: skipped, "
            f"{record['status']} record exists: {record['record_path']}"
        ]
    cell, sel, metrics, t = (
        record["cell"],
        record["selection"],
        record["metrics"],
        record["timings"],
    )
    lines = [
        f"prunebench | {cell['data']} | {cell['model']} | {cell['method']} | "
        f"removed {cell['fraction']:.0%} ({cell['keep']}{', balanced' if cell['balance'] else ''}) "
        f"| seed {cell['seed']}",
        f"  kept {sel['kept']}/{sel['total']} train examples; "
        f"{record['train']['steps']} steps ({cell['budget']} budget, {cell['epochs']} epochs)",
        f"  test acc {metrics['test_acc']:.4f}  loss {metrics['test_loss']:.4f}"
        + (f" | val acc {metrics['val_acc']:.4f}" if "val_acc" in metrics else ""),
        "  wall {:.1f} s ({}) on {}".format(
            t["total"],
            ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total"),
            record["env"]["device"],
        ),
        f"  record {record['record_path']}",
    ]
    return lines
