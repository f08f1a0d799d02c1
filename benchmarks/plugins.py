"""Methods, models and data sets from outside the repository.

A plugin is a module that registers with the decorators the built-ins use
(`methods.core.registry.register`, `MODELS.register`, `DATASETS.register`). Two ways in:

- an installed package declares entry points in the groups `prunebench.methods`,
  `prunebench.models` and `prunebench.datasets`, each naming either a module to import
  (it registers with the decorators) or the object itself, `pkg.mod:Object` (a
  `PruningMethod` subclass, a model factory, a data-set loader), registered under the
  entry point's name; an entry point that registers nothing is an error naming it;
- `plugins=[my_methods]` names modules importable from the working directory or
  PYTHONPATH, or `.py` files.

Entry points load in every process; named modules load when the command line names
them (before Hydra composes the config, see `plugins_in_overrides`) and again, as a
no-op or for modules named in config files, before the run uses a registry. A plugin
entry without a yaml of its own still composes as `method=NAME` (`model=`, `data=`):
its defaults (a method's dataclass fields, a model's keyword arguments) are stored in
Hydra's ConfigStore under its group, so its options are checked like a built-in's.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from benchmarks.errors import ConfigError, PrunebenchError
from benchmarks.registry import BUILT_IN, Registry, registering_for

ENTRY_POINT_GROUPS = ("prunebench.methods", "prunebench.models", "prunebench.datasets")
_loaded: set[str] = set()
_stored: set[tuple[str, str]] = set()


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Import every installed entry point and each of `modules` once, then store defaults.

    Without any plugin this imports nothing, so that a bad command line is answered before
    torch loads; with one, the built-ins register first, so that they keep their origin.
    """
    points = [p for group in ENTRY_POINT_GROUPS for p in entry_points(group=group)]
    if not points and not modules:
        return
    # the built-ins register first, under their own origin
    import benchmarks.data
    import benchmarks.models  # noqa: F401
    import methods  # noqa: F401

    for point in points:
        load_entry_point(point)
    for module in modules:
        _load(f"module:{module}", module_origin(module), lambda m=module: _import(m))
    _store_defaults()


def load_entry_point(point: EntryPoint) -> None:
    """Import the entry point's module, or register the object it names under its name."""
    origin = entry_point_origin(point)
    registry = _registry(point.group)

    def load() -> None:
        before = set(registry.names())
        target = point.load()
        if isinstance(target, types.ModuleType):
            if set(registry.names()) == before and not _defines_entries(registry, target):
                raise ConfigError(
                    f"{origin} names module {target.__name__}, which registers no "
                    f"{registry.kind}; register one in it, or name the {_WHAT[point.group]} "
                    f"itself ({target.__name__}:Name)"
                )
        elif not any(registry.get(name) is target for name in registry.names()):
            # (a decorated object was registered by its module's import)
            registry.register(point.name)(_registrable(point, target, origin))

    _load(f"{point.group}:{point.name}={point.value}", origin, load)


_WHAT = {
    "prunebench.methods": "PruningMethod subclass",
    "prunebench.models": "model factory",
    "prunebench.datasets": "data-set loader",
}


def _registry(group: str) -> Registry:
    from benchmarks.data import DATASETS
    from benchmarks.models import MODELS
    from methods.core.registry import METHODS

    return {"prunebench.methods": METHODS, "prunebench.models": MODELS}.get(group, DATASETS)


def _defines_entries(registry: Registry, module: types.ModuleType) -> bool:
    """Whether `module` (or a module inside it) defines something `registry` holds: one
    imported before, e.g. by another entry point of the same package, registered then."""
    prefix = module.__name__ + "."
    for name in registry.names():
        where = getattr(registry.get(name), "__module__", "") or ""
        if where == module.__name__ or where.startswith(prefix):
            return True
    return False


def _registrable(point: EntryPoint, target: Any, origin: str) -> Any:
    """The entry point's object as its registry holds it, a method under its entry point's
    name (a subclass carries the name when the class has none or another)."""
    from methods.core.base import PruningMethod

    if point.group != "prunebench.methods":
        if not callable(target):
            raise ConfigError(f"{origin} names {point.value}, not a {_WHAT[point.group]}")
        return target
    if not (isinstance(target, type) and issubclass(target, PruningMethod)):
        raise ConfigError(
            f"{origin} names {point.value}, not a module nor a PruningMethod subclass"
        )
    if getattr(target, "name", None) == point.name:
        return target
    named = {"name": point.name, "__module__": target.__module__}
    return type(target.__name__, (target,), {**named, "__qualname__": target.__qualname__})


def entry_point_origin(point: EntryPoint) -> str:
    """How a listing names an entry point's package: its distribution and version."""
    dist = point.dist
    package = f"{dist.name} {dist.version}" if dist is not None else point.value
    return f"{package} (entry point {point.group}: {point.name})"


def module_origin(module: str) -> str:
    """How a listing names a plugin module: its name and the file it is read from."""
    if module.endswith(".py"):
        return f"plugin {Path(module).expanduser().absolute()}"
    _on_path()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    return f"plugin {module}" + (f" ({spec.origin})" if spec and spec.origin else "")


def plugins_in_overrides(args: Sequence[str]) -> list[str]:
    """The modules a command line names in `plugins=[...]`, to load before Hydra composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    wanted = [a for a in args if a.lstrip("+~").startswith("plugins=")]
    try:
        overrides = OverridesParser.create().parse_overrides(wanted)
    except Exception:
        return []  # Hydra reports the malformed override itself
    names: list[str] = []
    for override in overrides:
        value = override.value()
        if isinstance(value, (list, str)):
            names += [str(v) for v in (value if isinstance(value, list) else [value])]
    return names


def load_command_line_plugins(args: Sequence[str]) -> None:
    """Entry-point start-up: load plugins before Hydra composes; a bad one exits with code 2."""
    from benchmarks.cli import ExitCode, error

    try:
        load_plugins(plugins_in_overrides(args))
    except PrunebenchError as err:
        error(str(err))
        sys.exit(int(ExitCode.BAD_INPUT))


def _load(key: str, origin: str, load: Callable[[], Any]) -> None:
    if key in _loaded:
        return
    try:
        with registering_for(origin):
            load()
    except ConfigError:
        raise  # a name clash: the message names the plugin already
    except Exception as err:
        raise ConfigError(f"{origin} failed to import: {type(err).__name__}: {err}") from None
    _loaded.add(key)


def _import(module: str) -> None:
    if module.endswith(".py"):
        path = Path(module).expanduser().absolute()
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = loaded
        spec.loader.exec_module(loaded)
        return
    _on_path()
    importlib.import_module(module)


def _on_path() -> None:
    """Modules in the working directory are importable, after everything else on the path."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _store_defaults() -> None:
    """Config group entries for plugin methods, models and data sets.

    A plugin's own yaml of the same name is merged over these defaults; Hydra warns that
    this matching is deprecated, but here it is wanted (and without it the yaml alone would
    be the config, which is as good), so that one warning is silenced.
    """
    from benchmarks.data import DATASETS
    from benchmarks.models import MODELS
    from methods.core.registry import METHODS

    warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")
    store = ConfigStore.instance()
    for group, registry, defaults in (
        ("method", METHODS, _method_defaults),
        ("model", MODELS, _model_defaults),
        ("data", DATASETS, lambda _: {}),
    ):
        for name in registry.names():
            if registry.origin(name) == BUILT_IN or (group, name) in _stored:
                continue
            store.store(group=group, name=name, node={"name": name, **defaults(registry.get(name))})
            _stored.add((group, name))


def _method_defaults(cls: type) -> dict[str, Any]:
    options: dict[str, Any] = {"label": None}
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        if f.default is not dataclasses.MISSING:
            options[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            options[f.name] = f.default_factory()
        else:
            options[f.name] = "???"
    return options


def _model_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    parameters = inspect.signature(factory).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.name not in ("in_channels", "image_size") and p.default is not inspect.Parameter.empty
    }
