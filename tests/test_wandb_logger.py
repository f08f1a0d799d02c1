"""W&B logger: offline runs hold what the record holds; a W&B failure never costs the record.

Offline runs are read back from their `.wandb` file (a LevelDB-style log of W&B's own
protobuf records, framed by analysis.wandb_offline), since wandb-core writes no
wandb-summary.json offline.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import wandb
from hydra import compose, initialize_config_dir
from patience import HUNG_AFTER_S
from wandb.proto import wandb_internal_pb2

from analysis.__main__ import main as analysis_main
from analysis.collect import run_row
from analysis.wandb_offline import attempt_order, log_payloads, offline_records
from analysis.wandb_offline import offline_runs as offline_runs_of
from benchmarks import pipeline
from benchmarks.errors import ConfigError
from benchmarks.wandb_logger import WandbLogger, flatten, make_logger, unflatten

ROOT = Path(__file__).resolve().parent.parent


def wandb_records(path: Path) -> list[Any]:
    return [wandb_internal_pb2.Record.FromString(p) for p in log_payloads(path)]


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Config, tags, group, history rows, final summary and exit code of an offline run."""
    (path,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"history": [], "summary": {}, "artifacts": []}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
            out["tags"], out["group"] = list(record.run.tags), record.run.run_group
        elif kind == "history":
            out["history"].append(
                {
                    "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                    for i in record.history.item
                }
            )
        elif kind == "summary":
            for item in record.summary.update:
                *parents, leaf = list(item.nested_key) or [item.key]
                node = out["summary"]
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append(record.artifact.name)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def offline_runs(directory: Path) -> list[Path]:
    return sorted((directory / "wandb").glob("offline-run-*"))


def compose_config(tmp_path: Path, *overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "model=mlp",
                "train.epochs=2",
                f"results.dir={tmp_path / 'results'}",
                f"cache.dir={tmp_path / 'cache'}",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real record of a tiny run (digits, MLP, 2 epochs), logged nowhere but locally."""
    tmp = tmp_path_factory.mktemp("record")
    return pipeline.run(compose_config(tmp), progress=False)


@pytest.fixture(autouse=True)
def no_wandb_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_offline_run_holds_the_config_curve_and_summary(record, tmp_path):
    logger = WandbLogger(mode="offline", dir=str(tmp_path), tags=["paper"])
    logger.start(record)
    logger.log_epoch(record["curve"][0])
    logger.finish(record)
    wandb.teardown()  # wandb-core writes the .wandb file in the background: wait for it
    (run_dir,) = offline_runs(tmp_path)
    run = read_offline_run(run_dir)
    assert run["config"]["train.lr"] == record["config"]["train"]["lr"]
    assert (
        run["config"]["cell.method"] == "random" and run["config"]["run_key"] == record["run_key"]
    )
    assert {"paper", "data=digits", "model=mlp", "method=random", "fraction=0.5", "seed=0"} == set(
        run["tags"]
    )
    assert [row["epoch"] for row in run["history"]] == [1, 2]  # epoch 1 logged once
    assert run["history"][-1]["lr"] == pytest.approx(record["curve"][-1]["lr"])
    summary = run["summary"]
    assert summary["test_acc"] == pytest.approx(record["metrics"]["test_acc"])
    assert summary["status"] == "finished" and summary["record_path"] == record["record_path"]
    assert summary["selection"]["kept"] == record["selection"]["kept"] == 718
    assert summary["selection"]["score_cost"] == record["selection"]["score_cost"]
    assert run["exit_code"] == 0 and run["artifacts"] == []


def test_scores_artifact_when_asked(record, tmp_path):
    logger = WandbLogger(mode="offline", dir=str(tmp_path), log_scores=True)
    logger.start(record)
    logger.finish(record, scores=np.linspace(0, 1, record["selection"]["total"]))
    wandb.teardown()
    (run_dir,) = offline_runs(tmp_path)
    assert read_offline_run(run_dir)["artifacts"] == ["scores-digits-random"]


def test_init_failure_warns_and_logs_nothing_more(record, monkeypatch, caplog):
    def fail(**kwargs):
        raise RuntimeError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", fail)
    logger = WandbLogger(mode="online")
    with caplog.at_level(logging.WARNING):
        logger.start(record)
        logger.log_epoch(record["curve"][0])
        logger.finish(record)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (
        "W&B init failed (RuntimeError: api.wandb.ai unreachable); "
        "the local record is unaffected, going on without W&B"
    )


def test_log_failure_closes_the_wandb_run_and_stops_logging(record, monkeypatch, caplog):
    calls = []

    def broken_log(row):
        calls.append("log")
        raise OSError("disk full")

    fake = SimpleNamespace(
        define_metric=lambda *a, **k: None,
        log=broken_log,
        finish=lambda exit_code: calls.append(f"finish {exit_code}"),
    )
    monkeypatch.setattr(wandb, "init", lambda **kwargs: fake)
    logger = WandbLogger()
    with caplog.at_level(logging.WARNING):
        logger.start(record)
        logger.log_epoch(record["curve"][0])
        logger.finish(record)
    assert calls == ["log", "finish 1"]
    assert len(caplog.records) == 1 and "W&B log failed (OSError: disk full)" in caplog.text


def test_mode_comes_from_the_environment_first(monkeypatch):
    assert make_logger({"name": "none"}) is None and make_logger(None) is None
    assert make_logger({"name": "wandb", "mode": "online"}).mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert make_logger({"name": "wandb", "mode": "online"}).mode == "disabled"
    monkeypatch.setenv("WANDB_MODE", "onlin")
    with pytest.raises(
        ConfigError, match="environment variable WANDB_MODE='onlin' is not a W&B mode"
    ):
        make_logger({"name": "wandb"})
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(ConfigError, match=r"logger.mode='dryrun' .* use offline, online, disabled"):
        make_logger({"name": "wandb", "mode": "dryrun"})
    with pytest.raises(
        ConfigError, match="logger.name='tensorboard' is unknown; use none or wandb"
    ):
        make_logger({"name": "tensorboard"})


def test_flatten_round_trips_a_config():
    config = {"train": {"lr": 0.1, "milestones": [0.3, 0.6]}, "ccs": {}, "seed": 0, "x": None}
    assert flatten(config) == {
        "train.lr": 0.1,
        "train.milestones": [0.3, 0.6],
        "ccs": {},
        "seed": 0,
        "x": None,
    }
    assert unflatten(flatten(config)) == config


def test_offline_sweep_rebuilds_the_local_leaderboard_cell_by_cell(tmp_path, capsys):
    env = {**os.environ, "PRUNEBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_MODE", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            "seed=0,1",
            "prune.fraction=0.3,0.5",
            "model=mlp",
            "train.epochs=1",
            "logger=wandb",
            "logger.mode=offline",
            f"logger.dir={tmp_path}",
            f"results.dir={tmp_path / 'results'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert proc.returncode == 0, proc.stderr
    local = {
        r["run_key"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json"))
    }
    runs = [read_offline_run(d) for d in offline_runs(tmp_path)]
    assert len(runs) == len(local) == 4
    for run in runs:
        mine = local[run["summary"]["run_key"]]
        assert run["summary"]["test_acc"] == pytest.approx(mine["metrics"]["test_acc"])
        assert run["group"] == str(tmp_path / "sweep") and run["exit_code"] == 0
    tables = {}
    for source in (str(tmp_path / "results"), f"wandb-offline:{tmp_path / 'wandb'}"):
        assert analysis_main(["leaderboard", source, "--format", "csv", "--digits", "6"]) == 0
        tables[source] = capsys.readouterr().out
    from_local, from_wandb = tables.values()
    assert "random" in from_local and from_wandb == from_local


def test_a_resumed_cell_continues_its_wandb_run_and_a_finished_one_opens_none(
    tmp_path, monkeypatch
):
    log_epoch = WandbLogger.log_epoch

    def interrupt_at_epoch_3(self, row):
        log_epoch(self, row)
        if row["epoch"] == 3:  # logged, then killed before its checkpoint is written
            raise KeyboardInterrupt  # as Ctrl-C, kill or preemption: no record, a checkpoint

    cfg = compose_config(
        tmp_path,
        "logger=wandb",
        f"logger.dir={tmp_path}",
        "train.epochs=4",
        "run.checkpoint_steps=6",
    )
    monkeypatch.setattr(WandbLogger, "log_epoch", interrupt_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, progress=False)
    monkeypatch.setattr(WandbLogger, "log_epoch", log_epoch)
    record = pipeline.run(cfg, progress=False)
    resumed_from = record["train"]["resumed_from_step"]
    assert record["status"] == "finished" and resumed_from > 0
    assert "skipped" in pipeline.run(cfg, progress=False)  # a finished cell opens no W&B run
    wandb.teardown()
    first, second = (read_offline_run(d) for d in offline_runs(tmp_path))
    assert {p.name for d in offline_runs(tmp_path) for p in d.glob("*.wandb")} == {
        f"run-{record['run_key']}.wandb"
    }
    assert [row["epoch"] for row in first["history"]] == [1, 2, 3]
    # the rerun retrains epoch 3 from an earlier checkpoint and logs only what the W&B run
    # does not hold: every epoch once over both attempts
    assert next(row["step"] for row in record["curve"] if row["epoch"] == 3) > resumed_from
    assert [row["epoch"] for row in second["history"]] == [4]
    (merged,) = offline_runs_of(tmp_path)
    assert merged.summary["status"] == "finished" and merged.exit_code == 0
    assert merged.summary["test_acc"] == pytest.approx(record["metrics"]["test_acc"])


def test_wandb_init_failure_keeps_the_local_record(tmp_path, monkeypatch, caplog):
    def fail(**kwargs):
        raise RuntimeError("wandb is broken")

    monkeypatch.setattr(wandb, "init", fail)
    cfg = compose_config(tmp_path, "logger=wandb", f"logger.dir={tmp_path}")
    with caplog.at_level(logging.WARNING):
        record = pipeline.run(cfg, progress=False)
    assert record["status"] == "finished" and Path(record["record_path"]).is_file()
    assert "W&B init failed (RuntimeError: wandb is broken)" in caplog.text


def test_epochs_are_logged_live_each_once_before_the_run_finishes(tmp_path, monkeypatch):
    calls = []
    log_epoch, finish = WandbLogger.log_epoch, WandbLogger.finish

    def spy_log_epoch(self, row):
        calls.append(int(row["epoch"]))
        log_epoch(self, row)

    def spy_finish(self, record, scores=None):
        calls.append("finish")
        finish(self, record, scores)

    monkeypatch.setattr(WandbLogger, "log_epoch", spy_log_epoch)
    monkeypatch.setattr(WandbLogger, "finish", spy_finish)
    cfg = compose_config(tmp_path, "logger=wandb", f"logger.dir={tmp_path}", "train.epochs=3")
    record = pipeline.run(cfg, progress=False)
    assert record["status"] == "finished"
    assert calls == [1, 2, 3, "finish"]


def test_offline_reader_keeps_the_whole_records_of_a_torn_file_and_orders_attempts(
    record, tmp_path
):
    logger = WandbLogger(mode="offline", dir=str(tmp_path))
    logger.start(record)
    logger.finish(record)
    wandb.teardown()
    (path,) = offline_runs(tmp_path)[0].glob("run-*.wandb")
    whole = list(log_payloads(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])  # killed mid-write: the last record is torn
    assert list(log_payloads(path)) == whole[:-1]
    flipped = bytearray(data)
    flipped[20] ^= 0xFF  # a flipped byte in the first record fails its CRC: nothing after it
    path.write_bytes(bytes(flipped))
    assert list(log_payloads(path)) == []
    names = [
        "offline-run-20261201_100000-k-1",
        "offline-run-20261201_100000-k",
        "run-20261130_235959-k",
    ]
    assert sorted(names, key=lambda n: attempt_order(n, "k")) == [names[2], names[1], names[0]]


def test_every_leaderboard_field_of_a_record_round_trips_through_wandb(tmp_path):
    cfg = compose_config(
        tmp_path, "method=el2n", "score.runs=1", "logger=wandb", f"logger.dir={tmp_path}"
    )
    record = pipeline.run(cfg, progress=False)
    wandb.teardown()
    local = run_row(json.loads(Path(record["record_path"]).read_text()))
    (mirrored,) = offline_records(tmp_path / "wandb", None, [])
    assert local["score_epoch"] == 1  # 0.1 of 2 epochs, at least 1: resolved, not configured
    assert record["config"]["method"]["epoch"] is None
    assert {**run_row(mirrored), "record_path": None} == {**local, "record_path": None}
