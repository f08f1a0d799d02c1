"""`python -m methods [PLUGIN ...]`: every method with its definition, paper, direction and
where it comes from (prunebench or a plugin: an installed package or a module named here)."""

from __future__ import annotations

import sys
import textwrap

from benchmarks.errors import PrunebenchError
from benchmarks.plugins import load_plugins
from methods.core.registry import METHODS, method_classes


def describe() -> str:
    blocks = []
    for cls in method_classes():
        lines = [cls.name]
        for label, attribute in (
            ("score", "summary"),
            ("paper", "paper"),
            ("keep=hard", "direction"),
            ("cost", "cost"),
        ):
            text = getattr(cls, attribute, "")  # a plugin's class may leave any of them out
            if not text:
                continue
            lines += textwrap.wrap(
                text, 96, initial_indent=f"  {label:<10}", subsequent_indent=" " * 12
            )
        lines.append(f"  {'from':<10}{METHODS.origin(cls.name)}")  # a path stays on one line
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


if __name__ == "__main__":
    try:
        load_plugins(sys.argv[1:])
    except PrunebenchError as err:
        print(f"prunebench: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(describe())
