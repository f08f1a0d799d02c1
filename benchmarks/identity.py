"""What a cell's config does not say but its result depends on: the code of the plugins it
runs and the content of the files its method reads.

A built-in's code is prunebench's own (the record's git commit says which); a plugin's is
not, and a method's `path` option names a file whose content may change under the same
name. Both go into the run key (benchmarks/results.py), so that an edited plugin or an
overwritten score file is a new cell instead of a stale result reused in silence.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

from benchmarks.bundles import split_member
from benchmarks.registry import BUILT_IN, Registry
from benchmarks.subsets import file_sha256

# A method option of one of these names, or ending in `_path` or `_file`, names a file the
# method reads: its content is part of the cell (precomputed's `path`; any method's).
INPUT_OPTION_NAMES = ("path", "file")
INPUT_OPTION_SUFFIXES = ("_path", "_file")


def cell_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The plugins' code and the method's input files of a resolved config; {} for a cell
    of built-ins that reads no file (its run key is then the config's alone)."""
    from benchmarks.data import DATASETS
    from benchmarks.models import MODELS
    from methods.core.registry import METHODS

    identity: dict[str, Any] = {}
    code = {
        section: plugin_code(registry, str(cfg[section]["name"]))
        for section, registry in (("method", METHODS), ("model", MODELS), ("data", DATASETS))
        if str(cfg[section].get("name")) in registry
        and registry.origin(str(cfg[section]["name"])) != BUILT_IN
    }
    if code:
        identity["code"] = code
    inputs = {f"method.{option}": _content(path) for option, path in input_files(cfg["method"])}
    if inputs:
        identity["inputs"] = inputs
    return identity


def plugin_code(registry: Registry, name: str) -> dict[str, Any]:
    """A plugin entry's package and version (if installed as one), its module and the sha256
    of the module's file (which changes with every edit, an editable install's too)."""
    entry = registry.get(name)
    module = sys.modules.get(getattr(entry, "__module__", ""), None)
    file = getattr(module, "__file__", None)
    package = _package_of(module.__name__) if module is not None else None
    return {
        "package": package,
        "module": getattr(entry, "__module__", None),
        "sha256": file_sha256(Path(file)) if file else None,
    }


def input_files(options: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted option, path) of every option naming a file a method reads, nested included."""
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from input_files(value, f"{name}.")
        elif isinstance(value, str) and value and _names_a_file(str(key)):
            yield name, value


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between two identities, in words: 'method code, method.path content'."""
    parts = [
        f"{section} code"
        for section in sorted({*old.get("code", {}), *new.get("code", {})})
        if old.get("code", {}).get(section) != new.get("code", {}).get(section)
    ]
    parts += [
        f"{option} content"
        for option in sorted({*old.get("inputs", {}), *new.get("inputs", {})})
        if old.get("inputs", {}).get(option) != new.get("inputs", {}).get(option)
    ]
    return ", ".join(parts)


def _names_a_file(option: str) -> bool:
    return option in INPUT_OPTION_NAMES or option.endswith(INPUT_OPTION_SUFFIXES)


def _content(path: str) -> str | None:
    """The file's sha256 (a bundle member's: its bundle's, whose manifest pins every member);
    None when it cannot be read (the method reports that itself)."""
    member = split_member(path)
    try:
        return file_sha256(Path(path if member is None else member[0]).expanduser())
    except OSError:
        return None


def _package_of(module: str) -> str | None:
    """'name version' of the installed distribution that holds `module`, if one does."""
    for dist in packages_distributions().get(module.partition(".")[0], []):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None
