"""From the data config to a DataSet: where the files are, which loader, which subset."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.data.dataset import DataSet, fingerprint
from benchmarks.data.splits import stratified_split
from benchmarks.errors import ConfigError
from benchmarks.registry import Registry

DEFAULT_ROOT = "~/.cache/prunebench/data"
DEFAULT_CACHE = "~/.cache/prunebench"


@dataclass(frozen=True)
class Source:
    """Where a loader finds its files and keeps its cache, resolved from the data config."""

    name: str
    root: Path
    cache_dir: Path
    download: bool | str
    path: Path | None
    mirror: str | None = None
    # the whole data config, for keys only some data sets read (resolution, valid, ...)
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Source:
        root = _absolute(cfg.get("root") or os.environ.get("PRUNEBENCH_DATA") or DEFAULT_ROOT)
        cache = cfg.get("cache_dir") or os.environ.get("PRUNEBENCH_CACHE") or DEFAULT_CACHE
        path = cfg.get("path")
        download = cfg.get("download", False)
        if not (isinstance(download, bool) or download == "auto"):
            raise ConfigError(
                f"data.download={download!r} is not allowed; use auto (download what is "
                "missing where an official download exists), true (the same, and an error "
                "where none exists) or false (never download)"
            )
        mirror = cfg.get("mirror") or os.environ.get("PRUNEBENCH_MIRROR") or None
        return cls(
            name=str(cfg.get("label") or cfg.get("name")),
            root=root,
            cache_dir=_absolute(cache),
            download=download,
            path=None if path is None else root / Path(str(path)).expanduser(),
            mirror=mirror,
            options=dict(cfg),
        )


Loader = Callable[[Source], DataSet]
DATASETS: Registry[Loader] = Registry("data set")


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(cfg: Mapping[str, Any]) -> DataSet:
    """The data set `cfg` names, subsampled as asked, named by its `label` when one is set."""
    name = cfg.get("name")
    if not name:
        raise ConfigError(f"data.name is not set; available: {', '.join(dataset_names())}")
    loader = DATASETS.get(str(name))
    source = Source.from_config(cfg)
    full = replace(loader(source), name=source.name)
    seed = int(cfg.get("subset_seed") or 0)
    train = _subset(full.train_y, cfg.get("max_train"), "max_train", seed, source.name)
    test = _subset(full.test_y, cfg.get("max_test"), "max_test", seed, source.name)
    return full if train is None and test is None else _take(full, train, test)


def _absolute(path: object) -> Path:
    return Path(str(path)).expanduser().absolute()


def _subset(
    labels: torch.Tensor, limit: object, key: str, seed: int, name: str
) -> torch.Tensor | None:
    """Indices of a stratified subsample of `limit` examples, or None to keep them all."""
    if limit is None:
        return None
    n = labels.numel()
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or not 1 <= limit <= n:
        raise ConfigError(
            f"data.{key}={limit!r} must be null or an integer in [1, {n}] "
            f"({name} has {n} {key.removeprefix('max_')} examples)"
        )
    return None if limit == n else stratified_split(labels, int(limit), seed)[1]


def _take(ds: DataSet, train: torch.Tensor | None, test: torch.Tensor | None) -> DataSet:
    """The examples at `train`/`test` (None: all of that split), fingerprinted anew."""
    tx, ty = (ds.train_x, ds.train_y) if train is None else (ds.train_x[train], ds.train_y[train])
    vx, vy = (ds.test_x, ds.test_y) if test is None else (ds.test_x[test], ds.test_y[test])
    val_index = ds.val_index
    if val_index is not None and train is not None:
        val_index = torch.nonzero(torch.isin(train, val_index)).flatten()
    return replace(
        ds,
        train_x=tx,
        train_y=ty,
        test_x=vx,
        test_y=vy,
        fingerprint=fingerprint(tx, ty, vx, vy),
        val_index=val_index,
        full_train_index=ds.origin if train is None else ds.origin[train.numpy()],
        full_n_train=ds.source_n_train,
        full_fingerprint=ds.source_fingerprint,
    )
