"""The result record: one JSON file per run, written atomically, found by run key.

A record is the unit every later step reads (leaderboards, plots, resumption), so
it carries everything needed to trust and reproduce its number: the resolved
config, the cell's key, the data fingerprint, the kept indices' hash, timings
and the software/hardware it ran on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.atomic import atomic_write

RECORD_SCHEMA = 1
CELL_SECTIONS = ("data", "model", "method", "prune", "train", "seed")
# the sections each method or model types itself: their numbers are hashed in one form
OPEN_SECTIONS = ("method", "model")
# where the data lives, and a switch that only permits a run: neither changes a result
DATA_LOCATION_KEYS = (
    "root",
    "cache_dir",
    "download",
    "mirror",
    "allow_missing_classes",
    "storage",
)
# What of data.stream changes the images trained on, with its default (the rest is speed):
# at its defaults a streamed cell is the in-memory cell and has its key.
STREAM_RESULT_DEFAULTS = {"transform": "fixed", "decode": "cpu", "reencode_short_side": None}
# How fast the same training runs, not what it computes: a compiled rerun is the same cell.
SPEED_ONLY_TRAIN_KEYS = ("compile", "cudnn_benchmark")
# How a cell is spread over devices, as the world size is: a cell on 1 or 8 GPUs is the same
# cell (the record states the world size and sync_bn).
LAYOUT_TRAIN_KEYS = ("sync_bn",)
PROJECT_DIR = Path(__file__).resolve().parent.parent
# the readable part of a record's file name (a long method.label is cut): with the run key,
# the stamp, a sidecar's suffix and a temp file's affixes, names stay far below 255 bytes
NAME_CHARS = 100

log = logging.getLogger(__name__)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_key(
    cfg: Mapping[str, Any], prunes: bool = True, identity: Mapping[str, Any] | None = None
) -> str:
    """Hash of what defines a cell: what is trained on what, how, with which seed, and
    (`identity`, benchmarks/identity.py) the plugins' code and the method's input files.

    Where the data lives, logging and output paths and speed-only switches do not change
    the result and are left out; so is the prune section of a method that removes nothing.
    A method's or model's number is hashed in one form, the int for an int-valued float
    (`method.delta=1` and `1.0` are one cell). A cell of built-ins reading no file and
    without such a float keeps the key of records written before these rules.
    """
    cell = _cell(cfg, prunes)
    for section in OPEN_SECTIONS:
        cell[section] = one_number_form(cell[section])
    if identity:
        cell["identity"] = identity
    return _hash(cell)


def legacy_run_key(cfg: Mapping[str, Any], prunes: bool = True) -> str:
    """The key that records written before numbers were hashed in one form have for `cfg`."""
    return _hash(_cell(cfg, prunes))


def _cell(cfg: Mapping[str, Any], prunes: bool) -> dict[str, Any]:
    cell = {name: cfg[name] for name in CELL_SECTIONS}
    cell["data"] = {k: v for k, v in cell["data"].items() if k not in DATA_LOCATION_KEYS}
    stream = cell["data"].pop("stream", None) or {}
    changed = {k: stream[k] for k, v in STREAM_RESULT_DEFAULTS.items() if stream.get(k, v) != v}
    if changed:
        cell["data"]["stream"] = changed
    left_out = SPEED_ONLY_TRAIN_KEYS + LAYOUT_TRAIN_KEYS
    cell["train"] = {k: v for k, v in cell["train"].items() if k not in left_out}
    if not prunes:
        cell["prune"] = None
    return cell


def _hash(cell: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(cell).encode()).hexdigest()[:16]


def one_number_form(value: Any) -> Any:
    """`value` with every int-valued float an int, in nested mappings and lists too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: one_number_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [one_number_form(v) for v in value]
    return value


def indices_hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that a reader sees either nothing or the whole file, even after kill -9."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=str), binary=False)


def record_path(results_dir: Path, record: Mapping[str, Any]) -> Path:
    stamp = re.sub(r"[^0-9T]", "", record["started_at"])[:18]
    return results_dir / f"{_cell_name(record['cell'])}_{record['run_key']}_{stamp}.json"


def records_of_cell(results_dir: Path, cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records whose file names this cell's data, model, method, fraction and seed, whatever
    their run key (the same cell with other code or input files among them), oldest first."""
    pattern = f"{glob.escape(_cell_name(cell))}_*_*.json"
    found = (read_record(path) for path in sorted(Path(results_dir).rglob(pattern)))
    return [record for record in found if record is not None]


def _cell_name(cell: Mapping[str, Any]) -> str:
    name = f"{cell['data']}_{cell['model']}_{cell['method']}_f{cell['fraction']:g}_s{cell['seed']}"
    return re.sub(r"[^A-Za-z0-9_.=-]", "-", name)[:NAME_CHARS]


def save_record(results_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(results_dir, record)
    record["record_path"] = str(path)
    write_json_atomic(path, record)
    return path


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every complete record below `results_dir` (temp files of writes in flight are skipped)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        record = read_record(path)
        if record is not None and record.get("schema") == RECORD_SCHEMA:
            yield record


def find_records(results_dir: Path, key: str, status: str | None = None) -> list[dict[str, Any]]:
    """Records of one cell, oldest first, optionally only those with `status`."""
    found = []
    for path in sorted(Path(results_dir).rglob(f"*_{key}_*.json")):
        record = read_record(path)
        if record is not None and (status is None or record.get("status") == status):
            record["record_path"] = str(path)  # where it is now (it may have been moved here)
            found.append(record)
    return found


def read_record(path: Path) -> dict[str, Any] | None:
    """The record in `path`; None, with a warning naming the file, if it cannot be one.

    A damaged file (a disk that filled, a hand edit) must not stop its cell from rerunning;
    temp files of writes in flight (".name") are not records.
    """
    if path.name.startswith("."):
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("skipping %s: not a readable record (%s)", path, err)
        return None
    if not isinstance(record, dict):
        log.warning("skipping %s: not a record (a JSON %s)", path, type(record).__name__)
        return None
    return record


def environment(device: torch.device) -> dict[str, Any]:
    """Software and hardware a run used."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        **git_state(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


def git_state() -> dict[str, Any]:
    """The project's commit and whether tracked files differ from it."""
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()
