"""The generated pages of the docs: the method table from the registry and the config
reference from the config schema, so that neither can be copied by hand and drift.

Read by docs/gen/pages.py at `mkdocs build` and by tests/test_docs.py (the README's
method list). Descriptions come from the comments above each key in conf/ (the yaml files
a user reads and edits), types from benchmarks/config_schema.py, defaults from the
composed default config (`python run.py` with no override).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import json
import os
import re
import typing
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w@]*):(?P<rest>.*)$")
# method yaml keys that every method has, explained once above the table
COMMON_METHOD_KEYS = ("name", "label")
VALUE_HEAD = "| key | value | what it sets |\n| --- | --- | --- |\n"
SCORE_KEYS = "../reference/config.md#score-the-score-protocol-of-the-proxy-methods"


def yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key -> the comment lines right above it (and its inline comment), joined.

    A comment block followed by a blank line describes the file or a section, not a key.
    """
    comments: dict[str, str] = {}
    pending: list[str] = []
    parents: list[tuple[int, str]] = []
    seen_key = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        dotted = ".".join([p for _, p in parents] + [match["key"]])
        value, _, inline = match["rest"].partition(" #")
        above = pending if seen_key else []  # the comments that open a file describe the file
        seen_key = True
        text = " ".join([*above, inline.strip()]).strip()
        if text:
            comments[dotted] = text
        pending = []
        if not value.strip():
            parents.append((indent, match["key"]))
    return comments


def source_comments(cls: type) -> dict[str, str]:
    """Field -> the comment lines right above it in its dataclass's source."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^\s+(\w+):", line)
        if match and pending:
            comments[match[1]] = " ".join(pending)
        pending = []
    return comments


def cell(value: object) -> str:
    """A value as a Markdown table cell, written as in yaml, as code (a pipe inside code does
    not split the cell)."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        value = json.dumps(value).replace('"', "")
    shown = str(value).replace("\n", " ")
    return f"`{shown}`" if shown else ""


def prose(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def type_name(annotation: Any) -> str:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    text = str(annotation) if name is None or typing.get_args(annotation) else name
    return text.replace("typing.", "").replace("NoneType", "None")


def default_config() -> Any:
    """The composed default config of `python run.py`, interpolations left as written."""
    from hydra import compose, initialize_config_dir

    import benchmarks.config_schema  # noqa: F401  (stores the schema Hydra composes on)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config")


def _value(node: Any, key: str) -> Any:
    value = OmegaConf.to_container(node, resolve=False)[key] if key in node else "(unset)"
    return "???" if value == "???" else value


def _schema_rows(schema: type, node: Any, prefix: str, notes: dict[str, str]) -> list[str]:
    rows = []
    hints = typing.get_type_hints(schema)
    own = source_comments(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            child = node.get(f.name) if node is not None else None
            rows += _schema_rows(hints[f.name], child, f"{key}.", notes)
            continue
        default = _value(node, f.name) if node is not None else f.default
        rows.append(
            f"| `{key}` | {cell(type_name(hints[f.name]))} | {cell(default)} "
            f"| {prose(notes.get(key) or own.get(f.name, ''))} |"
        )
    return rows


def _table(rows: list[str]) -> str:
    head = "| key | type | default | what it sets |\n| --- | --- | --- | --- |\n"
    return head + "\n".join(rows) + "\n"


def _group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _group_section(group: str, title: str) -> str:
    """Each choice of a config group: the keys its yaml file sets, with its comments
    (an experiment sets keys of every group: `@package _global_`)."""
    parts = [f"## `{group}`: {title}\n"]
    for choice in _group_choices(group):
        path = CONF / group / f"{choice}.yaml"
        notes = yaml_comments(path)
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        flat = dict(_flatten(values))
        prefix = "" if group == "experiment" else f"{group}."
        rows = [
            f"| `{prefix}{key}` | {cell(value)} | {prose(notes.get(key, ''))} |"
            for key, value in flat.items()
            if key != "name" or group == "experiment"
        ]
        parts.append(f"### `{group}={choice}`\n")
        header = _file_header(path)
        if header:
            parts.append(prose(header) + "\n")
        if rows:
            parts.append(VALUE_HEAD + "\n".join(rows) + "\n")
    return "\n".join(parts)


def _file_header(path: Path) -> str:
    """The comment block that opens a yaml file (what the file is)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines).replace("@package _global_", "").strip()


def _data_set_keys(own_keys: dict[str, type]) -> str:
    rows = []
    for data, keys in own_keys.items():
        hints = typing.get_type_hints(keys)
        notes = {**source_comments(keys), **yaml_comments(CONF / "data" / f"{data}.yaml")}
        rows += [
            f"| `{data}` | `data.{f.name}` | {cell(type_name(hints[f.name]))} "
            f"| {cell(f.default)} | {prose(notes.get(f.name, ''))} |"
            for f in dataclasses.fields(keys)
        ]
    head = "| data set | key | type | default | what it sets |\n| --- | --- | --- | --- | --- |\n"
    return head + "\n".join(rows) + "\n"


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def config_reference() -> str:
    """reference/config.md: every key of a run's config with its type, default and meaning."""
    from benchmarks import config_schema as schema

    cfg = default_config()
    notes = yaml_comments(CONF / "config.yaml")
    for group, choice in (("prune", "default"), ("train", "default"), ("logger", "wandb")):
        own = yaml_comments(CONF / group / f"{choice}.yaml")
        notes.update({f"{group}.{key}": text for key, text in own.items()})
    hints = typing.get_type_hints(schema.Config)
    top = [
        f"| `{f.name}` | {cell(type_name(hints[f.name]))} | {cell(_value(cfg, f.name))} "
        f"| {prose(notes.get(f.name, ''))} |"
        for f in dataclasses.fields(schema.Config)
        if not dataclasses.is_dataclass(hints[f.name])
        and typing.get_origin(hints[f.name]) is not dict
    ]
    sections = [
        "# Config keys\n",
        "Generated at build time from `benchmarks/config_schema.py` (types), the composed "
        "default config of `python run.py` (defaults) and the comments in `conf/` (what each "
        "key sets). A key not listed here, or a value of another type, stops a run with exit "
        "code 2 before any data is loaded (see [Concepts](../concepts.md#config-groups)). "
        "`???` is a value the choice must be given; `${...}` is an interpolation (an environment "
        "variable or another key).\n",
        "## Top level\n",
        _table(top),
    ]
    for name, title in (
        ("prune", "what is kept"),
        ("train", "the training of the kept subset"),
        ("score", "the score protocol of the proxy methods"),
        ("cache", "decoded data and score artifacts"),
        ("results", "where records go"),
        ("run", "grids, reruns, checkpoints"),
        ("logger", "Weights & Biases (`logger=wandb`)"),
    ):
        sections += [
            f"## `{name}`: {title}\n",
            prose(notes.get(name, "")) + "\n",
            _table(_schema_rows(hints[name], cfg.get(name), f"{name}.", notes)),
        ]
    sections += [
        "## `data`: keys every data set has\n",
        prose(notes.get("data", ""))
        + " The choice (`data=...`) sets `name`, its augmentation and its own keys; see "
        "[Data sets](../data.md).\n",
        _table(_schema_rows(schema.DataConfig, cfg.get("data"), "data.", notes)),
        "### Keys of one data set only\n",
        _data_set_keys(schema.DATA_SET_KEYS),
        _group_section("data", "the data set choices"),
        _group_section("model", "the model choices (options checked by the model itself)"),
        "## `method`\n",
        "Every method's options, with their defaults and types, are on "
        "[All methods](../methods/all.md).\n",
        _group_section("experiment", "whole-study presets (`python run.py -m experiment=...`)"),
    ]
    return "\n".join(sections)


def method_options(cls: type) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, note) of a method's options: its dataclass fields, the default
    being the value its conf/method yaml gives (what a run gets), else the field's own."""
    path = CONF / "method" / f"{cls.name}.yaml"
    yaml_values = dict(_flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False)))
    notes = {**shared_method_notes(), **(yaml_comments(path) if path.exists() else {})}
    if not dataclasses.is_dataclass(cls):
        return []
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        nested = sorted(k for k in yaml_values if k.startswith(f"{f.name}."))
        if nested:
            out += [(k, "", yaml_values[k], notes.get(k, "")) for k in nested]
            continue
        if f.name in yaml_values:
            default = yaml_values[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[misc]
        out.append((f.name, type_name(hints[f.name]), default, notes.get(f.name, "")))
    return out


def shared_method_notes() -> dict[str, str]:
    """The comments on the options every proxy method shares (`runs`, `proxy.*`), from
    whichever method yaml explains them, for the yaml files that do not repeat them."""
    notes: dict[str, str] = {}
    for path in sorted((CONF / "method").glob("*.yaml")):
        for key, text in yaml_comments(path).items():
            if key == "runs" or key.startswith("proxy."):
                notes.setdefault(key, text)
    return notes


def method_families() -> dict[str, tuple[str, str]]:
    """Method name -> (family page, its title): the pages of docs/methods/ whose tables give
    each method's protocol and deviations from the official code (a row per method)."""
    families: dict[str, tuple[str, str]] = {}
    for page in sorted((ROOT / "docs" / "methods").glob("*.md")):
        text = page.read_text()
        title = text.splitlines()[0].lstrip("# ").strip()
        for row in re.findall(r"^\| ([^|]+) \|", text, flags=re.M):
            for name in re.findall(r"`(\w+)`", row):
                families.setdefault(name, (page.name, title))
    return families


def built_in_methods() -> list[type]:
    """The methods prunebench ships: a plugin loaded in the same process is not the docs'."""
    from benchmarks.registry import BUILT_IN
    from methods import method_classes
    from methods.core.registry import METHODS

    return [cls for cls in method_classes() if METHODS.origin(cls.name) == BUILT_IN]


def method_lines() -> list[str]:
    """One line per built-in method, for the README: `name`: definition."""
    return [f"- `{cls.name}`: {cls.summary}" for cls in built_in_methods()]


def methods_page() -> str:
    """methods/all.md: every registered method, what it scores, its paper, direction, cost
    and options with their defaults, as `python -m methods` states them."""
    classes = built_in_methods()
    families = method_families()
    parts = [
        "# All methods\n",
        f"The {len(classes)} methods of the registry, generated at build time from each "
        "method's class (`python -m methods` prints the same) and its `conf/method/<name>.yaml`. "
        "Every score is oriented so that a high score is hard and kept first under "
        "`prune.keep=hard`. Besides the options below, every method takes `method.label`, "
        "the row name in leaderboards (null: the method's name; set it to tell variants "
        "apart, e.g. `grand@0`). A default written `${score.epoch}` follows the shared "
        f"score protocol ([Config keys]({SCORE_KEYS})).\n",
        "| method | score | keep=hard keeps |\n| --- | --- | --- |\n"
        + "\n".join(
            f"| [`{c.name}`](#{c.name}) | {prose(c.summary)} | {prose(c.direction)} |"
            for c in classes
        )
        + "\n",
    ]
    for c in classes:
        block = [f"## `{c.name}` {{ #{c.name} }}\n", f"{prose(c.summary)}\n"]
        page, family = families.get(c.name, ("", ""))
        facts = [
            ("Paper", c.paper),
            ("Keep=hard keeps", c.direction),
            ("Cost", c.cost),
            ("Protocol and deviations", f"[{family}]({page})" if page else ""),
        ]
        if c.dynamic:
            facts.append(("Kind", "dynamic: a new subset every pass, chosen during training"))
        listed = "\n".join(f"- **{name}**: {prose(text)}" for name, text in facts if text)
        block.append(listed + "\n")
        rows = [
            f"| `method.{key}` | {cell(kind)} | {cell(default)} | {prose(note)} |"
            for key, kind, default, note in method_options(c)
            if key not in COMMON_METHOD_KEYS
        ]
        if rows:
            block.append(
                "| option | type | default | what it sets |\n| --- | --- | --- | --- |\n"
                + "\n".join(rows)
                + "\n"
            )
        parts.append("\n".join(block))
    return "\n".join(parts)


README_BEGIN = "<!-- methods: generated by `python docs/gen/reference.py`, checked by tests -->"
README_END = "<!-- /methods -->"


def readme_with_methods(readme: str) -> str:
    """The README with its method list (between the two markers) made the registry's."""
    head, found, rest = readme.partition(README_BEGIN)
    if not found or README_END not in rest:
        raise ValueError(f"README.md has no {README_BEGIN} ... {README_END} block")
    tail = rest.partition(README_END)[2]
    return f"{head}{README_BEGIN}\n" + "\n".join(method_lines()) + f"\n{README_END}{tail}"


def _help(main: Any, argv: list[str]) -> str:
    """What `--help` prints for a command line, from its parser, in this process."""
    out = io.StringIO()
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to it: the same page on every machine
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    finally:
        if width is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = width
    return out.getvalue().strip()


def cli_page() -> str:
    """reference/cli.md: the options of every command besides run.py/score.py (whose options
    are the config keys), as their own `--help` prints them."""
    from analysis.__main__ import main as analysis_main
    from analysis.__main__ import parser
    from benchmarks.speed.__main__ import PARTS
    from benchmarks.speed.training import main as speed_main

    commands = next(
        action.choices
        for action in parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parts = [
        "# Commands\n",
        "Every command's options as its `--help` prints them, generated at build time. "
        "`run.py` and `score.py` take Hydra overrides: their keys are the "
        "[config keys](config.md); `python run.py --help` and `--cfg job` show the composed "
        "config.\n",
        "## `python -m methods [PLUGIN ...]`\n",
        "Every registered method (and those of the plugin modules named) with its definition, "
        "paper, direction, cost and origin: the [All methods](../methods/all.md) page.\n",
        "## `python -m analysis`\n",
        "```text\n" + _help(analysis_main, []) + "\n```\n",
    ]
    for name in commands:
        parts += [
            f"### `python -m analysis {name}`\n",
            "```text\n" + _help(analysis_main, [name]) + "\n```\n",
        ]
    parts += [
        "## `python -m benchmarks.speed`\n",
        "```text\n" + _help(speed_main, []) + "\n```\n",
    ]
    for name, main in PARTS.items():
        parts += [
            f"### `python -m benchmarks.speed {name}`\n",
            "```text\n" + _help(main, []) + "\n```\n",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(readme_with_methods(readme.read_text()))
