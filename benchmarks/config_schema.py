"""The schema of every config group, as Hydra structured configs.

The dataclasses are stored in Hydra's ConfigStore and head the defaults list of
conf/config.yaml (`schema: run`), so every yaml file and override is merged into a
typed node: an unknown key or a value of the wrong type stops the composition.
`validate` repeats the check on the composed config, because Hydra adds `+key=value`
overrides past the schema. Method and model options are open mappings, checked by
the method's and the model's own dataclass and signature (methods/base.py,
benchmarks/models.py).

A new key is one line in its group's dataclass here (name, type, default) plus its
value in the yaml file(s) that set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from benchmarks.errors import ConfigError


@dataclass
class AugmentConfig:
    crop_padding: int = 0
    flip: bool = False


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = MISSING
    cache_dir: str = MISSING
    # auto (download what is missing where an official download exists), true or false
    download: bool | str = "auto"
    mirror: str | None = None
    path: str | None = None
    label: str | None = None
    max_train: int | None = None
    max_test: int | None = None
    subset_seed: int = 0
    # an integer count or a fraction in (0, 1) of the training set
    val_size: int | float = 0
    val_seed: int = 0
    label_noise: float = 0.0
    label_noise_seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class CcsConfig:
    beta: float = 0.0
    bins: int = 50


@dataclass
class PruneConfig:
    fraction: float = 0.5
    keep: str = "hard"
    balance: bool = False
    offset: int = 0
    strategy: str = "topk"
    ccs: CcsConfig = field(default_factory=CcsConfig)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"
    milestones: list[float] = field(default_factory=lambda: [0.3, 0.6, 0.8])
    gamma: float = 0.2
    label_smoothing: float = 0.0
    budget: str = "iterations"
    eval_batch_size: int = 1024
    eval_every_epoch: bool = True
    amp: bool = True
    channels_last: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False


@dataclass
class ScoreProtocolConfig:
    epoch: int = 20
    runs: int = 10


@dataclass
class CacheConfig:
    dir: str = MISSING
    scores: bool = True


@dataclass
class ResultsConfig:
    dir: str = MISSING
    min_free_mb: float = 100


@dataclass
class RunConfig:
    progress: bool = True
    skip_completed: bool = True
    rerun_failed: bool = False
    checkpoint_steps: int = 500


@dataclass
class LoggerConfig:
    """`none` or `wandb`; the other keys are W&B's (conf/logger/wandb.yaml)."""

    name: str = "none"
    mode: str = "offline"
    project: str = "prunebench"
    entity: str | None = None
    dir: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_scores: bool = False


@dataclass
class Config:
    """The config of one run (run.py)."""

    data: DataConfig = field(default_factory=DataConfig)
    # open: each model checks its own options (benchmarks/models.py check_model)
    model: dict[str, Any] = field(default_factory=dict)
    # open: each method checks its own options (methods/base.py make_method)
    method: dict[str, Any] = field(default_factory=dict)
    prune: PruneConfig = field(default_factory=PruneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    score: ScoreProtocolConfig = field(default_factory=ScoreProtocolConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 0
    device: str = "auto"
    # modules imported before the run, e.g. to register a method of one's own
    plugins: list[str] = field(default_factory=list)


@dataclass
class ScoreExportConfig(Config):
    """score.py: a run's config plus the file the scores are exported to."""

    out: str = "scores.csv"


SCHEMAS: dict[str, type[Config]] = {"run": Config, "score": ScoreExportConfig}


def register() -> None:
    """Store the schemas where the defaults lists of conf/config.yaml and score.yaml find them."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node, package="_global_")


def validate(cfg: DictConfig) -> None:
    """Check the composed config against its schema; ConfigError names the first bad key.

    The config is merged as a plain mapping, so that keys Hydra force-added past the
    schema (`+key=value`) are caught too.
    """
    schema = schema_of(cfg)
    try:
        OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg))
    except OmegaConfBaseException as err:
        raise ConfigError(describe(err, schema)) from None


def schema_of(cfg: DictConfig) -> type[Config]:
    """The schema a composed config was built on (score.py's adds `out`)."""
    return ScoreExportConfig if "out" in cfg else Config


def describe(err: BaseException, schema: type[Config] = ScoreExportConfig) -> str:
    """One line for a composition error: the offending key and what it allows."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        parent = str(key).rpartition(".")[0]
        return f"unknown key {key!r}; {parent or 'the top level'} takes: {_keys(schema, parent)}"
    # Hydra appends its config search path to a missing group option: noise for the user
    text = str(cause).split("Config search path")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if key else " ".join(lines)
    return f"{key}: {message}" if key else message or type(cause).__name__


def _keys(schema: type[Config], parent: str) -> str:
    node = OmegaConf.structured(schema)
    for part in filter(None, parent.split(".")):
        node = node[part]
    return ", ".join(sorted(str(k) for k in node)) if isinstance(node, DictConfig) else "(none)"


register()
