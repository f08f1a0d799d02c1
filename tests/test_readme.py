"""The README is a landing page that cannot drift: its method list is the registry's (written by
`python docs/gen/reference.py`), and each of its commands is one the docs mark runnable, which
tests/test_docs_commands.py runs."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from test_docs_commands import RUNNABLE, shell_commands

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "gen"))

from reference import README_BEGIN, README_END, method_lines  # noqa: E402

README = (ROOT / "README.md").read_text()


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_method_list_is_the_registry():
    """`python docs/gen/reference.py` rewrites it; a method added or renamed fails here."""
    block = README.partition(README_BEGIN)[2].partition(README_END)[0]
    assert block.strip().splitlines() == method_lines()


def test_every_readme_command_is_run_by_the_docs_commands_test():
    """The README's commands (besides the two set-up lines, which CI itself runs) are marked
    runnable on a docs page, so the landing page cannot name a key that no longer exists."""
    runnable = {tuple(shlex.split(c, comments=True)) for _, _, cs in RUNNABLE for c, _ in cs}
    shown = [
        command
        for block in _shell_blocks(README)
        for command in shell_commands(block.splitlines())
        if not command.startswith("python3 -m venv")
    ]
    assert shown, "the README shows no command besides the set-up"
    missing = [line for line in shown if tuple(shlex.split(line, comments=True)) not in runnable]
    assert not missing, f"README commands that no docs page marks runnable: {missing}"
