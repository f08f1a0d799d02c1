"""Records rebuilt from the run files W&B writes offline (`wandb/offline-run-*`), no server needed.

A cluster without internet logs with `logger.mode=offline`; the leaderboard must not wait for
`wandb sync`. Since wandb-core (W&B >= 0.18) the Python package no longer ships a reader of
its `.wandb` transaction log, so this module reads the log's framing itself — a LevelDB-style
log of 32 KiB blocks whose chunks carry a CRC-32 (seeded with the chunk type), a length and a
type — and decodes each record with W&B's own protobuf classes (`wandb.proto`). A run that
was resumed (a requeued cell continues its run id) has one directory per attempt: they are
merged in the order they were written, as `wandb sync` merges them on the server.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.wandb_source import run_record

MAGIC = b":W&B"
FILE_HEADER = 7  # ":W&B", magic number (2), version (1)
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What prunebench reads back from one W&B run id: flat config, nested summary, labels."""

    run_id: str
    directories: list[Path]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    group: str = ""
    exit_code: int | None = None


def log_payloads(path: Path) -> Iterator[bytes]:
    """The records' bytes in a `.wandb` file; a torn tail (a process killed mid-write) ends it."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise AnalysisError(f"{str(path)!r} is not a W&B run file (no {MAGIC!r} header)")
    pos, parts = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += CHUNK_HEADER + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            yield parts
            parts = b""


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _apply(run: OfflineRun, path: Path) -> None:
    from wandb.proto import wandb_internal_pb2

    for payload in log_payloads(path):
        record = wandb_internal_pb2.Record.FromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            run.tags, run.group = list(record.run.tags), record.run.run_group
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            for item in record.config.remove:
                run.config.pop(item.key, None)
        elif kind == "summary":
            for item in record.summary.update:
                *parents, leaf = _item_path(item)
                node = run.summary
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code


def attempt_order(directory: str, run_id: str) -> tuple[str, int]:
    """`[offline-]run-YYYYMMDD_HHMMSS-ID[-N]`: W&B adds -N to a second attempt in one second."""
    stamp, _, rest = directory.removeprefix("offline-").removeprefix("run-").partition("-")
    suffix = rest[len(run_id) :].lstrip("-")
    return stamp, int(suffix) if suffix.isdigit() else 0


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every W&B run under `root` (searched recursively), attempts of one run id merged."""
    if not root.is_dir():
        raise AnalysisError(f"W&B offline directory {str(root)!r} does not exist")
    by_id: dict[str, list[Path]] = {}
    for path in root.rglob("run-*.wandb"):
        if path.parent.name.startswith(("offline-run-", "run-")):
            by_id.setdefault(path.stem[len("run-") :], []).append(path)
    runs = []
    for run_id, paths in sorted(by_id.items()):
        paths.sort(key=lambda p: attempt_order(p.parent.name, run_id))
        run = OfflineRun(run_id, [p.parent for p in paths])
        for path in paths:
            _apply(run, path)
        runs.append(run)
    if not runs:
        raise AnalysisError(f"no W&B run files (offline-run-*/run-*.wandb) under {str(root)!r}")
    return runs


def offline_records(root: Path, group: str | None, tags: list[str]) -> list[dict[str, Any]]:
    """The prunebench records held by the offline runs under `root`, filtered like the API's."""
    records = []
    for run in offline_runs(root):
        if (group is not None and run.group != group) or not set(tags) <= set(run.tags):
            continue
        record = run_record(run.config, run.summary, f"wandb-offline:{run.directories[-1]}")
        if record is not None:
            records.append(record)
    if not records:
        raise AnalysisError(f"no prunebench runs among the W&B offline runs under {str(root)!r}")
    return records
