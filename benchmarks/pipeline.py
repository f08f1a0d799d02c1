"""One run, start to end: load -> score -> select -> train -> evaluate -> record.

Data flows one way: the method never trains the final model and the trainer never
knows which method chose its subset.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import operator
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmarks.augment import Augment
from benchmarks.cache import ScoreCache, content_key
from benchmarks.compute import COUNT, UNIT, Tally, snapshot
from benchmarks.config_schema import validate
from benchmarks.data import DataSet, load_dataset, stratified_split
from benchmarks.data.placement import choose_storage
from benchmarks.data.source import ExampleSource, TensorSource
from benchmarks.data.stream import STREAMABLE, StreamedData, load_streamed
from benchmarks.distributed import (
    Dist,
    check_global_batch,
    rank_device,
    read_launch,
    setup,
)
from benchmarks.errors import (
    ConfigError,
    DataError,
    PrunebenchError,
    RankStopped,
    RunDiverged,
    StorageError,
)
from benchmarks.identity import cell_identity, describe_change
from benchmarks.models import check_model, model_options
from benchmarks.noise import flip_labels
from benchmarks.plugins import load_plugins
from benchmarks.results import (
    RECORD_SCHEMA,
    environment,
    find_records,
    indices_hash,
    legacy_run_key,
    records_of_cell,
    run_key,
    utc_now,
)
from benchmarks.seeding import derive_seed
from benchmarks.storage import check_writable, fallback_folders, os_error, save_record_or_fallback
from benchmarks.subsets import Subset
from benchmarks.summary import changed_line
from benchmarks.train import (
    Checkpointing,
    LossWeights,
    TrainSettings,
    budget_steps,
    evaluate_split,
    prepare_model,
    train,
)
from benchmarks.wandb_logger import WandbLogger, make_logger
from methods import get_method
from methods.core.base import PruningMethod, ScoreContext, ScoreCost, ScoreSpread
from methods.core.ccs import ccs_cut_scores
from methods.core.proxy_method import epoch_at
from methods.core.select import PruneSpec, ccs_beta_for, kept_count

log = logging.getLogger(__name__)


class Timer:
    """Wall seconds per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class Prepared:
    """The data of one run on its device, and the context methods score it in."""

    ds: DataSet | StreamedData
    train_index: np.ndarray  # positions of the training examples in the data set's order
    val_index: np.ndarray
    flipped: np.ndarray  # positions (in train_index) whose label was flipped
    ctx: ScoreContext
    val: ExampleSource
    test: ExampleSource
    storage: dict[str, Any]

    @property
    def origin(self) -> np.ndarray:
        """Each training example's index in the full data set's original training order."""
        return self.ctx.original_index

    def data_summary(self) -> dict[str, Any]:
        ds = self.ds
        return {
            "name": ds.name,
            "fingerprint": ds.fingerprint,
            "source_fingerprint": ds.source_fingerprint,
            "source_n_train": ds.source_n_train,
            "n_train": int(self.train_index.size),
            "n_val": int(self.val_index.size),
            "n_test": self.test.n,
            "classes": list(ds.classes),
            "mean": list(ds.mean),
            "std": list(ds.std),
            "val_indices_sha256": indices_hash(self.val_index),
            "storage": self.storage,
            "label_noise": {
                "flipped": self.flipped.tolist(),
                "true_labels": ds.train_y[
                    torch.from_numpy(self.train_index[self.flipped])
                ].tolist(),
            },
        }


def prune_spec(cfg: Mapping[str, Any]) -> PruneSpec:
    ccs = cfg.get("ccs") or {}
    fraction = float(cfg["fraction"])
    return PruneSpec(
        fraction=fraction,
        keep=str(cfg.get("keep", "hard")),
        balance=bool(cfg.get("balance", False)),
        offset=int(cfg.get("offset", 0)),
        strategy=str(cfg.get("strategy", "topk")),
        ccs_beta=ccs_beta_for(ccs.get("beta", 0.0), fraction),
        ccs_bins=int(ccs.get("bins", 50)),
        ccs_cut_by=str(ccs.get("cut_by", "aum")),
    )


def method_from_config(cfg: DictConfig) -> tuple[PruningMethod, str]:
    """The configured method and its leaderboard label (`label`, else the method's own: its
    name, or the name of the file a subset comes from)."""
    options = OmegaConf.to_container(cfg, resolve=True)
    name = str(options.pop("name"))
    label = options.pop("label", None)
    options.pop("train_budget", None)  # the method's protocol default for train.budget
    method = get_method(name, options)
    return method, str(label or method.row_label())


def shared_score_epoch(cfg: DictConfig) -> int:
    """The shared early-training epoch (score.epoch, or its fraction of the proxy's schedule)."""
    if cfg.score.get("epoch") is not None:
        return int(cfg.score.epoch)
    fraction = float(cfg.score.get("epoch_fraction", 0.1))
    epochs = cfg.score.get("proxy_epochs") or cfg.train.epochs
    return epoch_at(fraction, int(epochs), minimum=int(fraction > 0))


def proxy_parallel(cfg: DictConfig) -> str:
    """How proxy runs use a cell's ranks (score.proxy_parallel): `runs` or `data`."""
    return str(cfg.score.get("proxy_parallel", "runs")) if cfg.get("score") else "runs"


def check_shared_recordings(cfg: DictConfig, world: int) -> None:
    """A proxy trained over all ranks is written by rank 0 and read by the others from the
    score cache: score.proxy_parallel=data on several ranks needs it."""
    if world > 1 and proxy_parallel(cfg) == "data" and not cfg.cache.get("scores", True):
        raise ConfigError(
            f"score.proxy_parallel=data trains each proxy run over the {world} ranks, which "
            "read its recording from the score cache; it needs cache.scores=true (with "
            "cache.dir one folder that every rank reads), or score.proxy_parallel=runs"
        )


def prepare(cfg: DictConfig, device: torch.device) -> Prepared:
    """Load the data set (in memory or streamed, data.storage), carve validation, inject label
    noise, and move it to the device."""
    storage, reason = choose_storage(cfg.data, device)
    if storage == "stream" or cfg.data.name in STREAMABLE:  # a choice was made: say which
        print(f"data.storage: {storage} ({reason})")
    ds = load_dataset(cfg.data) if storage == "memory" else load_streamed(cfg.data, device)
    n = int(ds.train_y.shape[0])
    val_size = cfg.data.get("val_size") or 0
    if val_size and ds.val_index is not None:
        raise ConfigError(
            f"data.val_size={val_size!r} carves a validation split but {ds.name} brings its "
            "own (data.valid=val); set data.val_size=0 or data.valid=train"
        )
    if val_size:
        rest, val = stratified_split(ds.train_y, val_size, int(cfg.data.get("val_seed", 0)))
        train_index, val_index = rest.numpy(), val.numpy()
    elif ds.val_index is not None:
        val_index = ds.val_index.numpy()
        train_index = np.setdiff1d(np.arange(n), val_index)
    else:
        train_index, val_index = np.arange(n), np.empty(0, dtype=np.int64)
    if not cfg.data.get("allow_missing_classes", False):
        check_every_class(ds, {"training": train_index, "validation": val_index}, cfg.data)
    y = ds.train_y[torch.from_numpy(train_index)]
    noise = float(cfg.data.get("label_noise") or 0.0)
    y, flipped = flip_labels(y, noise, ds.num_classes, int(cfg.data.get("label_noise_seed", 0)))
    train_t, val_t = torch.from_numpy(train_index), torch.from_numpy(val_index)
    streamed = isinstance(ds, StreamedData)
    ctx = ScoreContext(
        train_x=None if streamed else ds.train_x[train_t].to(device),
        train_y=y.to(device),
        num_classes=ds.num_classes,
        mean=ds.mean,
        std=ds.std,
        device=device,
        seed=int(cfg.seed),
        data_fingerprint=score_fingerprint(ds),
        augment=Augment(**dict(cfg.data.get("augment") or {})),
        model_name=str(cfg.model.name),
        model_options=model_options(cfg.model),
        train_cfg=OmegaConf.to_container(cfg.train, resolve=True),
        cache=ScoreCache(cfg.cache.dir) if cfg.cache.get("scores", True) else None,
        keep_weights_at=(shared_score_epoch(cfg),) if cfg.get("score") else (),
        proxy_parallel=proxy_parallel(cfg),
        origin=ds.origin[train_index],
        source_n_train=ds.source_n_train,
        source_fingerprint=ds.source_fingerprint,
    )
    if streamed:
        ctx.streamed = ds.train.subset(train_t).with_labels(ctx.train_y)
        ctx.streamed_val = ds.train.subset(val_t)
        test: ExampleSource = ds.test
    else:
        ctx.val_x, ctx.val_y = ds.train_x[val_t].to(device), ds.train_y[val_t].to(device)
        test = TensorSource(ds.test_x.to(device), ds.test_y.to(device), None, ds.num_classes)
    return Prepared(
        ds=ds,
        train_index=train_index,
        val_index=val_index,
        flipped=flipped.numpy(),
        ctx=ctx,
        val=ctx.val_source,
        test=test,
        storage={"mode": storage, "reason": reason, **(ds.info if streamed else {})},
    )


def score_fingerprint(ds: DataSet | StreamedData) -> str:
    """What score caches key the data by: its fingerprint, and a streamed run's crops (the
    images its proxies train on are not the in-memory ones)."""
    if isinstance(ds, StreamedData) and ds.options.transform != "fixed":
        return content_key({"data": ds.fingerprint, "transform": ds.options.transform})
    return ds.fingerprint


def check_every_class(ds: DataSet, splits: Mapping[str, np.ndarray], cfg: DictConfig) -> None:
    """A split without some class trains or selects on fewer classes than it tests on."""
    for split, index in splits.items():
        if split == "validation" and not index.size:
            continue
        labels = ds.train_y[torch.from_numpy(index)].numpy()
        counts = np.bincount(labels, minlength=ds.num_classes)
        if counts.min() == 0:
            missing = int((counts == 0).sum())
            settings = ", ".join(
                f"data.{k}={cfg.get(k)}" for k in ("max_train", "val_size") if cfg.get(k)
            )
            raise DataError(
                f"the {split} split ({settings or 'all of ' + ds.name}) has no example of "
                f"{missing} of {ds.num_classes} classes (per-class counts: "
                f"{', '.join(map(str, counts.tolist()))}); use more data or set "
                "data.allow_missing_classes=true"
            )


def run(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    """Execute one cell and write its record; return the record.

    Bad input (PrunebenchError) leaves no record, wherever it is found: it is not a result.
    Launched as several processes (torchrun, submitit's tasks), the cell trains
    data-parallel: the checks run on every rank before the process group forms, and
    rank 0 writes the record (benchmarks/distributed.py).
    """
    validate(cfg)
    started_at = utc_now()
    timer = Timer()
    load_plugins(list(cfg.get("plugins") or []))
    spec = prune_spec(cfg.prune)
    settings = TrainSettings.from_config(cfg.train)
    launch = read_launch()
    check_global_batch(settings.batch_size, launch.world)
    check_shared_recordings(cfg, launch.world)
    method, method_label = method_from_config(cfg.method)
    method.check_schedule(OmegaConf.to_container(cfg.train, resolve=True))
    logger = make_logger(cfg.get("logger")) if launch.rank == 0 else None
    check_model(str(cfg.model.name), model_options(cfg.model))
    device = rank_device(str(cfg.get("device", "auto")), launch)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    identity = cell_identity(resolved)
    keyed_prune = method.prunes and method.selects  # else the prune section is no part of it
    key = run_key(resolved, prunes=keyed_prune, identity=identity)
    cell = {
        "data": str(cfg.data.get("label") or cfg.data.name),
        "model": str(cfg.model.name),
        "method": method_label,
        "method_name": method.name,
        "fraction": spec.fraction if method.prunes else 0.0,
        "seed": int(cfg.seed),
        "keep": spec.keep,
        "balance": spec.balance,
        "strategy": spec.strategy,
        "offset": spec.offset,
        "budget": settings.budget,
        "epochs": settings.epochs,
    }
    results_dir = Path(str(cfg.results.dir)).expanduser()
    done = _completed(results_dir, key, cfg.run)
    if done is None and not identity:  # written before numbers were hashed in one form
        done = _completed(results_dir, legacy_run_key(resolved, keyed_prune), cfg.run)
    if done is not None:
        return {**done, "skipped": True, "rank": launch.rank}
    if identity:
        _say_what_changed(results_dir, cell, resolved, keyed_prune, identity, cfg.run)
    cache_dir = Path(str(cfg.cache.dir)).expanduser()
    checkpoint_dir = results_dir / ".checkpoints"
    check_writable(
        {
            "results.dir": results_dir,
            "results.dir/.checkpoints": checkpoint_dir,
            "cache.dir": cache_dir,
        },
        float(cfg.results.get("min_free_mb", 0)),
    )
    checkpointing = None
    if int(cfg.run.checkpoint_steps) > 0:
        checkpointing = Checkpointing(checkpoint_dir / f"{key}.pt", int(cfg.run.checkpoint_steps))
    dist = setup(launch, device, float(cfg.run.dist_timeout_s), bool(cfg.train.sync_bn))
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "run_key": key,
        "status": "running",
        "cell": cell,
        "config": resolved,
        # the plugins' code and the method's input files, hashed into run_key
        "identity": identity,
        **command_overrides(),
        "started_at": started_at,
        "env": {**environment(dist.device), "distributed": dist.describe()},
    }
    try:
        record = _run_cell(
            cfg, dist, record, timer, spec, settings, method, logger, progress, checkpointing,
            results_dir, cache_dir,
        )  # fmt: skip
        # the returned record says which rank returns it: rank 0 wrote it and prints it
        return {**record, "rank": dist.rank}
    except BaseException as err:
        if not dist.active or isinstance(err, (SystemExit, KeyboardInterrupt, RankStopped)):
            raise
        stopped = dist.failed(err)  # the other ranks learn which rank failed first
        if isinstance(err, PrunebenchError):
            raise
        raise stopped from err
    finally:
        dist.close()


def _run_cell(
    cfg: DictConfig,
    dist: Dist,
    record: dict[str, Any],
    timer: Timer,
    spec: PruneSpec,
    settings: TrainSettings,
    method: PruningMethod,
    logger: WandbLogger | None,
    progress: bool,
    checkpointing: Checkpointing | None,
    results_dir: Path,
    cache_dir: Path,
) -> dict[str, Any]:
    if logger is not None:
        logger.start(record)
    scores = None
    kept = KeptSubset()
    try:
        scores = _execute(
            cfg, record, timer, spec, settings, method, dist, progress, checkpointing, logger, kept
        )
        record["status"] = "finished"
    except RunDiverged as err:
        record["status"] = "diverged"
        record["error"] = str(err)
        raise
    except PrunebenchError:
        record["status"] = "rejected"
        raise
    except OSError as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StorageError(
            f"cannot write {err.filename or 'a file'}: {os_error(err)}; free space there, "
            "then a rerun runs this cell again"
        ) from None
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        if dist.active:
            stopped = dist.failed(err)
            record["error"] = str(stopped)
            if stopped is not err:
                raise stopped from err
        raise
    finally:
        record["timings"] = {**timer.seconds, "total": sum(timer.seconds.values())}
        record["finished_at"] = utc_now()
        try:
            # an interrupted run (Ctrl-C) leaves no record, only its checkpoint to resume from
            saves = dist.writer and "data" in record
            if saves and record["status"] not in ("running", "rejected"):
                _save(results_dir, record, fallback_folders(cache_dir), checkpointing, kept.subset)
        finally:
            if logger is not None:
                logger.finish(record, scores)
    return record


def command_overrides() -> dict[str, list[str]]:
    """The command line's overrides of a run started by Hydra (`python run.py ...`), for a
    bundle's list of commands; {} for a run started from Python."""
    if not HydraConfig.initialized():
        return {}
    return {"overrides": list(HydraConfig.get().overrides.task)}


def weights_summary(weights: LossWeights | None) -> dict[str, Any]:
    """What the record says about the subset's loss weights; the weights themselves are in
    the kept-subset sidecar (`weights`, aligned with its sorted `indices`)."""
    if weights is None:
        return {"weighted": False}
    return {
        "weighted": True,
        "weights_batch_normalised": weights.batch_normalise,
        "weights_batch_mean_scale": weights.batch_mean_scale,
        "weights_sum": float(weights.values.double().sum()),
    }


def cell_compute(score: ScoreCost, train: Tally, evaluation: Tally, network: str) -> dict[str, Any]:
    """The cell's total compute in example-passes of the trained network: the scores' (their
    proxy trainings included, whichever job ran them) and the training's; the evaluations
    are stated beside it, not in it (they measure the result, whatever the method)."""
    counts = {"score": score.passes, "train": train, "eval": evaluation}
    for tally in counts.values():
        tally.flops.setdefault(network, COUNT.flops[network])
    units = {stage: tally.units(network) for stage, tally in counts.items()}
    return {
        "unit": UNIT,
        "network": network,
        "total": units["score"] + units["train"],
        **units,
        "passes": {stage: tally.as_record() for stage, tally in counts.items()},
    }


@dataclass
class KeptSubset:
    """The subset a run trained on, written beside its record when the record is written
    (so that a record and its sidecar land in the same folder, or neither)."""

    subset: Subset | None = None


def _save(
    results_dir: Path,
    record: dict[str, Any],
    fallbacks: list[Path],
    checkpointing: Checkpointing | None,
    subset: Subset | None,
) -> None:
    """Write the record and its sidecar (to a fallback folder if results.dir fails), then
    drop the checkpoint of a run that ended (a failed one keeps it, so that its rerun
    resumes)."""
    try:
        save_record_or_fallback(results_dir, record, fallbacks, subset)
    finally:
        if checkpointing is not None and record["status"] != "failed":
            checkpointing.path.unlink(missing_ok=True)


def _completed(results_dir: Path, key: str, run_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The newest record that is this cell's result: finished, or diverged unless reruns of
    those are asked. A failed record is a crash, not a result: it never makes a cell done."""
    if not run_cfg.get("skip_completed", True):
        return None
    found = [r for r in find_records(results_dir, key) if r.get("status") in _results(run_cfg)]
    return found[-1] if found else None


def _results(run_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The statuses of a record that is a cell's result."""
    return ("finished",) if run_cfg.get("rerun_diverged", False) else ("finished", "diverged")


def _say_what_changed(
    results_dir: Path,
    cell: Mapping[str, Any],
    resolved: Mapping[str, Any],
    prunes: bool,
    identity: Mapping[str, Any],
    run_cfg: Mapping[str, Any],
) -> None:
    """Name the record this run would have reused but for a plugin's code or an input file
    that changed since: a cell run again, not a stale result, and the reader knows why."""
    if not run_cfg.get("skip_completed", True):
        return
    same_config = run_key(resolved, prunes)
    earlier = [
        r
        for r in records_of_cell(results_dir, cell)
        if r.get("status") in _results(run_cfg)
        and isinstance(r.get("config"), Mapping)
        and run_key(r["config"], prunes) == same_config
    ]
    if earlier:
        last = earlier[-1]
        what = describe_change(last["identity"], identity) if "identity" in last else None
        print(changed_line(cell, last.get("record_path", "?"), what), flush=True)


def _execute(
    cfg: DictConfig,
    record: dict[str, Any],
    timer: Timer,
    spec: PruneSpec,
    settings: TrainSettings,
    method: PruningMethod,
    dist: Dist,
    progress: bool,
    checkpointing: Checkpointing | None,
    logger: WandbLogger | None,
    kept_subset: KeptSubset,
) -> np.ndarray | None:
    seed = int(cfg.seed)
    device = dist.device
    with timer.stage("load"):
        prep = prepare(cfg, device)
    ctx = prep.ctx
    ctx.dist, ctx.spread = dist, ScoreSpread.over(dist.world)
    ctx.prune = spec  # greedy orders stop where this selection reads no further
    method.check(ctx)
    fixed = method.removed_fraction(ctx)
    if fixed is not None:
        spec = dataclasses.replace(spec, fraction=fixed)
        ctx.prune = spec
        record["cell"]["fraction"] = fixed
    record["data"] = prep.data_summary()
    method = method.resolve(ctx)
    static = method.prunes and not method.dynamic
    every_class = static and not cfg.data.get("allow_missing_classes", False)
    if every_class and kept_count(ctx.n, spec.fraction) < ctx.num_classes:
        raise DataError(
            f"prune.fraction={spec.fraction:g} keeps {kept_count(ctx.n, spec.fraction)} of the "
            f"{ctx.n} training examples, fewer than the {ctx.num_classes} classes; use more data, "
            "a lower fraction, or set data.allow_missing_classes=true"
        )

    # every rank scores: proxy runs spread over the ranks, score passes sharded by example
    with timer.stage("score"):
        scores = method.score(ctx) if static else None
        cut = ccs_cut_scores(method, ctx) if static and spec.cuts_by_aum else None

    def select() -> tuple[np.ndarray, LossWeights | None]:
        with timer.stage("select"), ctx.alone():
            if scores is None:
                kept = np.arange(ctx.n)
            else:
                kept = method.select_subset(ctx, scores, spec, derive_seed(seed, "select"), cut)
            weights = method.subset_weights(ctx, kept) if static else None
        return kept, weights

    kept, weights = _selected_on_writer(dist, record["run_key"], select)
    per_class = np.bincount(ctx.labels[kept], minlength=ctx.num_classes)
    if every_class and per_class.min() == 0:
        # a score order may drop whole classes (hard examples at a high fraction): a result,
        # said once, that prune.balance=true avoids
        log.warning(
            "the kept subset (%d of %d examples, prune.fraction=%g) has no example of %d of %d "
            "classes (kept per class: %s); prune.balance=true keeps every class",
            kept.size,
            ctx.n,
            spec.fraction,
            int((per_class == 0).sum()),
            ctx.num_classes,
            ", ".join(map(str, per_class.tolist())),
        )
    sampler = method.sampler(ctx.n, spec.fraction) if method.dynamic else None
    record["selection"] = {
        "total": ctx.n,
        "kept": int(kept.size),
        "expected_kept": kept_count(ctx.n, spec.fraction) if static else ctx.n,
        "fraction_removed": 1.0 - kept.size / ctx.n,
        "kept_indices_sha256": indices_hash(prep.origin[kept]),
        "kept_per_class": per_class.tolist(),
        "kept_flipped": int(np.isin(prep.flipped, kept).sum()),
        "score_cost": ctx.cost.as_record(),
        "score_spread": ctx.spread.as_record(),
        "method_options": method.options(),
        **weights_summary(weights),
    }
    if sampler is None:
        kept_subset.subset = Subset(
            prep.origin[kept], None if weights is None else weights.values.double().cpu().numpy()
        )
    model = prepare_model(ctx.build_model(None, derive_seed(seed, "init")), device, settings)
    kept_source = ctx.source.subset(torch.from_numpy(kept))
    eval_passes = Tally()

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        nonlocal eval_passes
        before = snapshot()
        with timer.stage("eval"):
            acc, loss = evaluate_split(m, prep.test, settings.eval_batch_size, settings.amp, dist)
            out = {"test_acc": acc, "test_loss": loss}
            if prep.val.n:
                acc, loss = evaluate_split(
                    m, prep.val, settings.eval_batch_size, settings.amp, dist
                )
                out.update(val_acc=acc, val_loss=loss)
        eval_passes = eval_passes + (snapshot() - before)
        return out

    nominal = kept_count(ctx.n, spec.fraction) if method.dynamic else kept.size
    total_steps = budget_steps(nominal, ctx.n, settings)
    train_start, train_passes = dict(timer.seconds), snapshot()
    with timer.stage("train"):
        logs = train(
            model,
            kept_source,
            settings,
            total_steps,
            order_seed=derive_seed(seed, "order"),
            evaluate=evaluate,
            progress=progress,
            desc=f"{method.name} f={spec.fraction:g}",
            checkpointing=checkpointing,
            sampler=sampler,
            weights=weights,
            on_log=None if logger is None else lambda log: logger.log_epoch(log.as_dict()),
            dist=dist,
        )
    timer.seconds["train"] -= timer.seconds.get("eval", 0.0) - train_start.get("eval", 0.0)
    record["metrics"] = {
        **logs[-1].eval,
        "train_loss": logs[-1].train_loss,
        "train_acc": logs[-1].train_acc,
    }
    record["curve"] = [log.as_dict() for log in logs]
    record["train"] = {
        "steps": logs[-1].step,
        "passes_over_kept": (
            sampler.passes
            if sampler is not None
            else logs[-1].step / -(-kept.size // settings.batch_size)
        ),
        "augment": ctx.augment.describe(),
        "resumed_from_step": 0 if checkpointing is None else checkpointing.resumed_from_step,
        "world_size": dist.world,
        "sync_bn": dist.sync_bn,
    }
    if isinstance(prep.ds, StreamedData):
        decoder = prep.ds.train.decoder
        record["data"]["storage"].update(
            examples_read=decoder.examples_read, bytes_read=decoder.bytes_read
        )
    trained = (snapshot() - train_passes) - eval_passes
    # data-parallel: each rank counted the passes over its own slices
    trained = functools.reduce(operator.add, dist.gathered(trained))
    eval_passes = functools.reduce(operator.add, dist.gathered(eval_passes))
    record["compute"] = cell_compute(ctx.cost, trained, eval_passes, model.network)
    record["compute"]["wall_seconds"] = ctx.cost.seconds + timer.seconds["train"]
    if sampler is not None:
        record["selection"]["dynamic"] = {
            "passes": sampler.passes,
            # the share of the last pass the step budget did not reach
            "unfinished": sampler.unfinished,
            "seen_fraction": sampler.seen_fraction(),
        }
        record["selection"]["fraction_removed"] = 1.0 - sampler.seen_fraction()
        kept_subset.subset = Subset(prep.origin, counts=sampler.counts.cpu().numpy())
    return scores


def _selected_on_writer(
    dist: Dist, key: str, select: Callable[[], tuple[np.ndarray, LossWeights | None]]
) -> tuple[np.ndarray, LossWeights | None]:
    """(kept, weights): selected by rank 0 alone (one selection, whatever a method draws),
    which every rank then trains on; the others wait on the store meanwhile."""
    if not dist.active:
        return select()

    def on_writer() -> tuple[np.ndarray, LossWeights | None]:
        kept, weights = select()
        if weights is not None:  # a pickled CUDA tensor would land on rank 0's GPU
            weights = dataclasses.replace(weights, values=weights.values.cpu())
        return kept, weights

    kept, weights = dist.from_writer(f"{key}/selection", on_writer)
    if weights is not None:
        weights = dataclasses.replace(weights, values=weights.values.to(dist.device))
    return kept, weights
