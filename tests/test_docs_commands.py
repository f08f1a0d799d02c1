"""The commands the docs mark runnable run, at tiny size: a renamed key, option or command
breaks CI, not a reader's first hour.

A page marks a shell block with `<!-- runnable -->` on the line before its fence
(`<!-- runnable: key=value ... -->` to narrow a grid for the test), and a file the commands
need (a plugin module, a yaml) with `<!-- runnable-file: PATH -->`. The commands of one page
run in order, in one fresh folder, as a reader runs them from a folder of their own: results,
outputs and plugins land there. `run.py` and `score.py` get the tiny overrides below (they
replace the command's own value of the same key); `export` lines are the reader's
environment and are not run (the test sets its own).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from patience import HUNG_AFTER_S

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
MARK = re.compile(r"^<!-- runnable(?:: (?P<overrides>.*?))? -->$")
FILE_MARK = re.compile(r"^<!-- runnable-file: (?P<path>\S+) -->$")
FENCE = re.compile(r"^```")
TINY = {
    "train.epochs": "1",
    "train.batch_size": "32",
    "data.max_train": "200",
    "data.max_test": "100",
    "data.download": "false",
    "score.runs": "1",
    "run.progress": "false",
}
ENTRY_POINTS = ("run.py", "score.py")


def _fenced(lines: list[str], start: int) -> list[str]:
    """The body of the fenced block that opens at or after `start`."""
    begin = next(i for i in range(start, len(lines)) if FENCE.match(lines[i]))
    end = next(i for i in range(begin + 1, len(lines)) if FENCE.match(lines[i]))
    return lines[begin + 1 : end]


def shell_commands(body: list[str]) -> list[str]:
    """Shell lines of a block, `\\`-continued lines joined, comments and `export` dropped."""
    joined = "\n".join(body).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] != "export":
            commands.append(line)
    return commands


def marked(page: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The files and (command, test overrides) a page marks runnable, in page order."""
    lines = page.read_text().splitlines()
    files: dict[str, str] = {}
    commands: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if found := FILE_MARK.match(line.strip()):
            files[found["path"]] = "\n".join(_fenced(lines, i + 1)) + "\n"
        elif found := MARK.match(line.strip()):
            overrides = found["overrides"] or ""
            commands += [(command, overrides) for command in shell_commands(_fenced(lines, i + 1))]
    return files, commands


def tiny(words: list[str], overrides: str) -> list[str]:
    """A run.py/score.py command at tiny size: each key of TINY and of the page's overrides
    replaces the command's own value of it, or is appended."""
    wanted = dict(TINY)
    wanted.update(word.split("=", 1) for word in shlex.split(overrides))
    out = []
    for word in words:
        key = word.split("=", 1)[0].lstrip("+~")
        out.append(f"{key}={wanted.pop(key)}" if "=" in word and key in wanted else word)
    return out + [f"{key}={value}" for key, value in wanted.items()]


def argv(command: str, overrides: str, cwd: Path) -> list[str]:
    env = {"PB": str(ROOT), "PWD": str(cwd)}
    words = [
        re.sub(r"\$(\w+)", lambda m: env.get(m[1], m[0]), w)
        for w in shlex.split(command, comments=True)
    ]
    if words[0] in ("python", "python3"):
        words[0] = sys.executable
    script = Path(words[1]).name if len(words) > 1 else ""
    if script in ENTRY_POINTS:
        words[1] = str(ROOT / script)
        words = tiny(words, overrides)
    return words


def _needs_data(commands: list[tuple[str, str]]) -> bool:
    """Whether a page's runs read a data set that is not built in (digits is)."""
    return any(re.search(r"\b(data|experiment)=(?!digits\b)", c) for c, _ in commands)


RUNNABLE = [(p, *marked(p)) for p in PAGES]


def test_the_docs_mark_commands_runnable():
    """The mark is read: the pages that show the main commands mark them."""
    pages = {p.relative_to(ROOT).as_posix() for p, _, commands in RUNNABLE if commands}
    assert {"docs/get-started.md", "docs/extend.md", "docs/results.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, files, commands",
    [r for r in RUNNABLE if r[2]],
    ids=[r[0].relative_to(ROOT).as_posix() for r in RUNNABLE if r[2]],
)
def test_runnable_commands_of_a_page_run_at_tiny_size(page, files, commands, tmp_path):
    if _needs_data(commands) and not os.environ.get("PRUNEBENCH_DATA"):
        pytest.skip("PRUNEBENCH_DATA is unset: the page's commands read a real data set")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PRUNEBENCH_RESULTS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["WANDB_MODE"] = "offline"
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors: one thread each, no oversubscription
    for command, overrides in commands:
        words = argv(command, overrides, tmp_path)
        done = subprocess.run(
            words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
        )
        assert done.returncode == 0, (
            f"{page.name}: `{command}` ran as {shlex.join(words)} and exited "
            f"{done.returncode}\n{(done.stdout + done.stderr)[-3000:]}"
        )
