"""The packed store: a data set's encoded images written once into shards, read by index.

Layout of one store, `<cache>/packed/<name>-<key>/`:

    manifest.json        written last: what the store holds, its shards' sizes, the data
                         set's fingerprint and statistics (of the in-memory decode)
    <split>-NNNNN.bin    the encoded images (JPEG bytes as they are, or re-encoded at a
                         fixed shorter side), concatenated
    <split>.npz          per example: shard, offset, length, CRC-32, label, original index

Reading example i is one pread of its bytes, so a sampler that keeps 10% of the data reads
10% of the bytes. The format is the simplest that gives random access by index; measured
against litdata's optimized format and webdataset's tar shards in docs/streaming.md.

Packing happens once under a file lock (concurrent jobs wait, then read the finished store),
into `<store>.partial`, renamed to `<store>` only when complete: a killed pack leaves only a
partial folder, which the next pack removes and starts over. Every example's CRC-32 is
checked when it is read and every shard's size when the store is opened: a corrupt or
truncated shard is a DataError naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from benchmarks.atomic import atomic_write
from benchmarks.data.decode import usable_cores
from benchmarks.errors import DataError

PACK_FORMAT = 1
MANIFEST = "manifest.json"
REPACK = "delete that folder to pack the data set again"


@dataclass(frozen=True)
class PackPlan:
    """What to pack: each split's files and labels, and how to decode them for the data set's
    fingerprint and statistics (the in-memory decode, so that both agree)."""

    name: str
    classes: Sequence[str]
    splits: dict[str, tuple[Sequence[Path], np.ndarray]]
    decode: Callable[[Image.Image], np.ndarray]
    reencode_short_side: int | None = None
    shard_bytes: int = 256 << 20
    quality: int = 90


def pack(folder: Path, plan: PackPlan, workers: int | None = None) -> PackedStore:
    """The store at `folder`, packed from `plan` unless a complete one is there."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if (folder / MANIFEST).is_file():
        return PackedStore(folder)
    with FileLock(f"{folder}.lock"):
        if not (folder / MANIFEST).is_file():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            _write(partial, plan, workers or usable_cores())
            os.replace(partial, folder)
    return PackedStore(folder)


def _write(folder: Path, plan: PackPlan, workers: int) -> None:
    import multiprocessing

    from tqdm import tqdm

    digest = hashlib.sha256()
    counts: np.ndarray | None = None
    manifest: dict[str, Any] = {
        "format": PACK_FORMAT,
        "name": plan.name,
        "classes": list(plan.classes),
        "reencode_short_side": plan.reencode_short_side,
        "splits": {},
    }
    job = _PackJob(plan.decode, plan.reencode_short_side, plan.quality)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for split, (files, labels) in plan.splits.items():
            writer = _ShardWriter(folder, split, plan.shard_bytes)
            with tqdm(total=len(files), desc=f"packing {plan.name} {split}", unit="img") as bar:
                for encoded, pixels in pool.imap(job, [str(f) for f in files], chunksize=16):
                    writer.add(encoded)
                    digest.update(pixels.tobytes())
                    if split == "train":
                        per_channel = np.stack(
                            [np.bincount(c.reshape(-1), minlength=256) for c in pixels]
                        )
                        counts = per_channel if counts is None else counts + per_channel
                    bar.update()
            digest.update(np.asarray(labels, dtype=np.int64).tobytes())
            index = writer.close(np.asarray(labels, dtype=np.int64))
            atomic_write(folder / f"{split}.npz", lambda f, index=index: np.savez(f, **index))
            manifest["splits"][split] = {"n": len(files), "shards": writer.shards}
    manifest["fingerprint"] = digest.hexdigest()
    manifest["mean"], manifest["std"] = _stats(counts)
    text = json.dumps(manifest, indent=1)
    atomic_write(folder / MANIFEST, lambda f: f.write(text), binary=False)


def _stats(counts: np.ndarray | None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x/255 from value counts, as `channel_stats` computes them."""
    if counts is None:
        return [], []
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for row in torch.from_numpy(counts).double():
        mean = float((row * values).sum() / row.sum())
        means.append(mean)
        stds.append(float((row * (values - mean) ** 2).sum() / row.sum()) ** 0.5)
    return means, stds


@dataclass(frozen=True)
class _PackJob:
    """In a worker: one file's bytes to store and its pixels under the in-memory decode."""

    decode: Callable[[Image.Image], np.ndarray]
    short_side: int | None
    quality: int

    def __call__(self, path: str) -> tuple[bytes, np.ndarray]:
        try:
            data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                pixels = self.decode(image)
            if self.short_side is not None:
                data = _reencode(data, self.short_side, self.quality)
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{path}: cannot decode image ({err})") from None
        return data, pixels


def _reencode(data: bytes, short_side: int, quality: int) -> bytes:
    """The image as a JPEG whose shorter side is `short_side` (never enlarged)."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = min(1.0, short_side / min(w, h))
        if scale < 1:
            image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()


class _ShardWriter:
    def __init__(self, folder: Path, split: str, shard_bytes: int) -> None:
        self.folder, self.split, self.shard_bytes = folder, split, shard_bytes
        self.shards: list[dict[str, Any]] = []
        self.columns: dict[str, list[int]] = {k: [] for k in ("shard", "offset", "length", "crc")}
        self.file: io.BufferedWriter | None = None
        self.offset = 0

    def add(self, data: bytes) -> None:
        if self.file is None or (self.offset and self.offset + len(data) > self.shard_bytes):
            self._next_shard()
        self.file.write(data)
        for key, value in zip(
            self.columns,
            (len(self.shards) - 1, self.offset, len(data), zlib.crc32(data)),
            strict=True,
        ):
            self.columns[key].append(value)
        self.offset += len(data)
        self.shards[-1]["bytes"] = self.offset

    def _next_shard(self) -> None:
        self._finish_shard()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self.file = open(self.folder / name, "wb")  # noqa: SIM115 (closed in _finish_shard)
        self.shards.append({"file": name, "bytes": 0})
        self.offset = 0

    def _finish_shard(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def close(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        self._finish_shard()
        return {
            "shard": np.asarray(self.columns["shard"], dtype=np.int32),
            "offset": np.asarray(self.columns["offset"], dtype=np.int64),
            "length": np.asarray(self.columns["length"], dtype=np.int64),
            "crc": np.asarray(self.columns["crc"], dtype=np.uint32),
            "label": labels,
            "original": np.arange(labels.size, dtype=np.int64),
        }


class PackedStore:
    """A finished store, opened for reading; each process opens its own file handles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            self.manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as err:
            raise DataError(
                f"packed store {folder}: unreadable manifest ({err}); {REPACK}"
            ) from None
        found = self.manifest.get("format")
        if found != PACK_FORMAT:
            raise DataError(f"packed store {folder}: format {found}, not {PACK_FORMAT}; {REPACK}")
        self.index = {split: self._index(split) for split in self.manifest["splits"]}
        for meta in self.manifest["splits"].values():
            for shard in meta["shards"]:
                path = folder / shard["file"]
                size = path.stat().st_size if path.is_file() else None
                if size != shard["bytes"]:
                    raise DataError(
                        f"packed store shard {path} holds {size} bytes, not the "
                        f"{shard['bytes']} it was written with; {REPACK}"
                    )
        self._fds: dict[tuple[str, int], int] = {}
        self._pid = os.getpid()
        self.reads = 0
        self.bytes_read = 0

    def _index(self, split: str) -> dict[str, np.ndarray]:
        try:
            with np.load(self.folder / f"{split}.npz") as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise DataError(
                f"packed store {self.folder}: unreadable {split}.npz ({err}); {REPACK}"
            ) from None

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def labels(self, split: str) -> np.ndarray:
        return self.index[split]["label"]

    def read(self, split: str, i: int) -> bytes:
        """Example i's encoded bytes, checked against its CRC-32."""
        index = self.index[split]
        shard = int(index["shard"][i])
        length = int(index["length"][i])
        data = os.pread(self._fd(split, shard), length, int(index["offset"][i]))
        self.reads += 1
        self.bytes_read += len(data)
        if len(data) != length or zlib.crc32(data) != int(index["crc"][i]):
            path = self.folder / self.manifest["splits"][split]["shards"][shard]["file"]
            raise DataError(
                f"packed store shard {path}: {split} example {i} fails its checksum "
                f"(bytes {int(index['offset'][i])}..{int(index['offset'][i]) + length}); {REPACK}"
            )
        return data

    def read_many(self, split: str, ids: Sequence[int]) -> Iterator[bytes]:
        for i in ids:
            yield self.read(split, int(i))

    def _fd(self, split: str, shard: int) -> int:
        if os.getpid() != self._pid:  # a forked worker opens its own
            self._fds, self._pid = {}, os.getpid()
        key = (split, shard)
        if key not in self._fds:
            name = self.manifest["splits"][split]["shards"][shard]["file"]
            self._fds[key] = os.open(self.folder / name, os.O_RDONLY)
        return self._fds[key]
