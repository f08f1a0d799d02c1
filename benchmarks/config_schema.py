"""The schema of every config group, as Hydra structured configs.

The dataclasses are stored in Hydra's ConfigStore and head the defaults list of
conf/config.yaml (`schema: run`), so every yaml file and override is merged into a
typed node: an unknown key or a value of the wrong type stops the composition.
`validate` repeats the check on the composed config, because Hydra adds `+key=value`
overrides past the schema; it checks the data section too, which is open at
composition because some keys belong to one data set only (DATA_SET_KEYS). Method and
model options are open mappings, checked by the method's and the model's own
dataclass and signature (methods/core/base.py, benchmarks/models.py).

A new key is one line in its group's dataclass here (name, type, default) plus its
value in the yaml file(s) that set it: a key every data set has goes into DataConfig
and conf/config.yaml's data section; a key of one data set into its entry of
DATA_SET_KEYS and its conf/data/<name>.yaml, so that no other cell's config (and run
key) changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
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
class StreamConfig:
    # fixed: the in-memory decode, then data.augment; crop: RandomResizedCrop + flip for
    # training, Resize + CenterCrop for evaluation (the ImageNet papers' protocol)
    transform: str = "fixed"
    # cpu: decoded by worker processes; cuda: torchvision.io.decode_jpeg on the run's GPU
    decode: str = "cpu"
    # decoding processes (null: the usable cores less one; 0: in the training process)
    workers: int | None = None
    # training batches decoded ahead of the one being trained on
    prefetch: int = 4
    # re-encode the JPEGs at this shorter side when packing (null: their bytes as they are)
    reencode_short_side: int | None = None
    shard_mb: int = 256


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
    # train even when the training or validation split leaves a class without an example
    allow_missing_classes: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # memory (decoded tensors on the device), stream (packed once, read by index), or auto
    # (memory where the decoded data fits the device with room for training)
    storage: str = "auto"
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class Cinic10Keys:
    # train: CINIC's valid split merged into training (Data Diet); val: the validation split
    valid: str = "train"


@dataclass
class ImagenetKeys:
    # side of the square images ImageNet is decoded to (shorter side resized, centre crop)
    resolution: int = 64


# sections each method or model checks itself (their options are not in this schema)
OPEN_SECTIONS = ("method", "model")
# keys that only some data sets read, by data set name
DATA_SET_KEYS: dict[str, type] = {"cinic10": Cinic10Keys, "imagenet": ImagenetKeys}


@dataclass
class CcsConfig:
    # a number, or a table {removed fraction: beta} (methods.core.select.ccs_beta_for)
    beta: Any = 0.0
    bins: int = 50
    cut_by: str = "aum"


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
    sync_bn: bool = False


PROXY_PARALLEL = ("runs", "data")


@dataclass
class ScoreProtocolConfig:
    # null: epoch_fraction of the proxy's schedule (methods.core.proxy_method.epoch_at)
    epoch: int | None = None
    epoch_fraction: float = 0.1
    runs: int = 10
    proxy_epochs: int | None = None
    # an integer, or "cell" (the cell's seed): checked by the methods (method.proxy.seed)
    proxy_seed: Any = 0
    # several ranks: `runs` spreads the proxy runs (each a one-device training), `data`
    # trains each proxy run data-parallel over all ranks (checked in benchmarks/pipeline.py)
    proxy_parallel: str = "runs"


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
    rerun_diverged: bool = False
    checkpoint_steps: int = 500
    dist_timeout_s: float = 1800.0


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

    # checked by `validate`: DataConfig plus the data set's own DATA_SET_KEYS
    data: dict[str, Any] = field(default_factory=dict)
    # open: each model checks its own options (benchmarks/models.py check_model)
    model: dict[str, Any] = field(default_factory=dict)
    # open: each method checks its own options (methods/core/base.py make_method)
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


# seeds are hashed into the 63-bit streams of benchmarks/seeding.py and named in file names
SEED_RANGE = "seeds are integers in [0, 2**63)"


def validate(cfg: DictConfig) -> None:
    """Check the composed config against its schema; ConfigError names the first bad key.

    The config is merged as a plain mapping, so that keys Hydra force-added past the
    schema (`+key=value`) are caught too.
    """
    schema = schema_of(cfg)
    plain = OmegaConf.to_container(cfg)
    data = dict(plain.get("data") or {})
    own = DATA_SET_KEYS.get(str(data.get("name")))
    own_keys = {f.name for f in fields(own)} if own else set()
    try:
        OmegaConf.merge(OmegaConf.structured(schema), plain)
        _check_section("data", DataConfig, {k: v for k, v in data.items() if k not in own_keys})
        if own is not None:
            _check_section("data", own, {k: v for k, v in data.items() if k in own_keys})
    except OmegaConfBaseException as err:
        raise ConfigError(describe(err, schema, data.get("name"))) from None
    parallel = (plain.get("score") or {}).get("proxy_parallel", "runs")
    if parallel not in PROXY_PARALLEL:
        raise ConfigError(
            f"score.proxy_parallel={parallel!r} is not one of {', '.join(PROXY_PARALLEL)} "
            "(runs: the proxy runs spread over the ranks; data: each trained over all ranks)"
        )
    seeds = {"seed": plain.get("seed")}
    seeds.update({f"data.{k}": v for k, v in data.items() if k.endswith("_seed")})
    for key, value in seeds.items():
        if isinstance(value, int) and not 0 <= value < 2**63:
            raise ConfigError(f"{key}={value} is out of range: {SEED_RANGE}")


def _check_section(name: str, schema: type, values: Mapping[str, Any]) -> None:
    """Merge `values` into `schema` as the section `name`, so errors carry its full keys."""
    holder = make_dataclass("Section", [(name, schema, field(default_factory=schema))])
    OmegaConf.merge(OmegaConf.structured(holder), {name: dict(values)})


def schema_of(cfg: DictConfig) -> type[Config]:
    """The schema a composed config was built on (score.py's adds `out`)."""
    return ScoreExportConfig if "out" in cfg else Config


def describe(
    err: BaseException, schema: type[Config] = ScoreExportConfig, data_set: object = None
) -> str:
    """One line for a composition error: the offending key and what it allows."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        parent = str(key).rpartition(".")[0]
        if parent in OPEN_SECTIONS and isinstance(cause.parent_node, DictConfig):
            name, allowed = _open_section_keys(parent, cause.parent_node)
            return f"unknown key {key!r}; {parent} {name!r} takes: {allowed}"
        allowed = _data_keys(data_set) if parent == "data" else _keys(schema, parent)
        return f"unknown key {key!r}; {parent or 'the top level'} takes: {allowed}"
    # Hydra appends its config search path to a missing group option: noise for the user
    text = str(cause).split("Config search path")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if key else " ".join(lines)
    return f"{key}: {message}" if key else message or type(cause).__name__


def _open_section_keys(section: str, node: DictConfig) -> tuple[str, str]:
    """The method's or model's name and the options it takes: the schema leaves these sections
    open, so they come from the registered class or factory (and its composed yaml)."""
    import methods  # noqa: F401  (registers the built-ins)
    from benchmarks.models import MODELS, model_option_names
    from methods.core.base import method_option_names
    from methods.core.registry import METHODS

    name = str(node.get("name"))
    keys = {str(k) for k in node} - {"name"}
    if section == "method" and name in METHODS:
        keys |= {"label", *method_option_names(METHODS.get(name))}
    elif section == "model" and name in MODELS:
        keys |= set(model_option_names(name))
    return name, ", ".join(sorted(keys)) or "(none)"


def _data_keys(data_set: object) -> str:
    shared = ", ".join(sorted(f.name for f in fields(DataConfig)))
    own = DATA_SET_KEYS.get(str(data_set))
    if own is not None:
        return f"{shared}; and for {data_set}: {', '.join(f.name for f in fields(own))}"
    others = "; ".join(
        f"{name}: {', '.join(f.name for f in fields(keys))}" for name, keys in DATA_SET_KEYS.items()
    )
    return f"{shared} (only some data sets: {others})"


def _keys(schema: type[Config], parent: str) -> str:
    section, _, below = parent.partition(".")
    node: Any = OmegaConf.structured(DataConfig if section == "data" else schema)
    for part in filter(None, (below if section == "data" else parent).split(".")):
        node = node.get(part) if isinstance(node, DictConfig) else None
    if not isinstance(node, DictConfig) or not len(node):
        return "(no keys)"
    return ", ".join(sorted(str(k) for k in node))


register()
