"""`python -m methods`: every registered method with its definition, paper and direction."""

from __future__ import annotations

import textwrap

from methods import method_classes


def describe() -> str:
    blocks = []
    for cls in method_classes():
        lines = [cls.name]
        for label, text in (
            ("score", cls.summary),
            ("paper", cls.paper),
            ("keep=hard", cls.direction),
            ("cost", cls.cost),
        ):
            if not text:
                continue
            lines += textwrap.wrap(
                text, 96, initial_indent=f"  {label:<10}", subsequent_indent=" " * 12
            )
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


if __name__ == "__main__":
    print(describe())
