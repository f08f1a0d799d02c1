"""Streamed data against torchvision's ImageFolder + PIL + DataLoader, on ImageNet-like JPEGs.

    python -m benchmarks.speed stream                    # 20,000 images, the tree made once
    python -m benchmarks.speed stream --workers 1 2 --repeats 3   # interleaved rounds, medians
    python -m benchmarks.speed stream --images 2000 --batches 10 --workers 1   # a quick look

The tree is CIFAR-10's training JPEGs (PRUNEBENCH_DATA/cifar10-jpg.tar.gz) upscaled to about
ImageNet's mean size (400 x 350, bicubic) and saved at quality 90 in ImageNet's layout, so
that decode costs what it costs on ImageNet. Measured on it:

- packing: seconds and bytes of the store (benchmarks.data.pack), and of litdata's
  optimized format and webdataset's tar shards where those libraries import;
- the training transform (RandomResizedCrop(224) + flip) in images/s per decoding process,
  streamed (`StreamSource.train_batch`, `--workers` processes) and through torchvision's
  ImageFolder + PIL + DataLoader with as many workers, the same transforms, the same files,
  the same random order; their ratio. With several worker counts and `--repeats`, the
  two readers take turns in every round (which goes first alternates) and each figure is
  the median over the rounds, the ratio that of the medians;
- bytes read for an epoch over 100%, 50% and 10% of the examples (a seeded subset), read
  through the store by index, and what a random read of the 10% subset costs in each store;
- peak host memory of the streamed reader (this process and its workers).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.data.decode import usable_cores
from benchmarks.data.pack import PackedStore, PackPlan, pack
from benchmarks.data.stream import CentreCrop, Decoder, StreamOptions, StreamSource
from benchmarks.speed.report import write_json

SIZE = (400, 350)
KEPT = (1.0, 0.5, 0.1)
CLASSES = 10


def make_tree(archive: Path, root: Path, images: int) -> list[tuple[Path, int]]:
    """`images` CIFAR-10 JPEGs upscaled to 400 x 350 under root/train/<class>/ (made once)."""
    done = root / ".complete"
    if not done.exists():
        count = 0
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if count >= images or not member.isfile() or "train" not in parts:
                    continue
                label = parts[-2]
                folder = root / "train" / label
                folder.mkdir(parents=True, exist_ok=True)
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    big = image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
                    big.save(folder / f"{count:06d}.JPEG", quality=90)
                count += 1
        done.write_text(str(count))
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    return [
        (f, label)
        for label, c in enumerate(classes)
        for f in sorted((root / "train" / c).glob("*"))
    ]


def pack_store(folder: Path, files: list[tuple[Path, int]], workers: int) -> dict[str, Any]:
    plan = PackPlan(
        name="stream-bench",
        classes=[str(i) for i in range(CLASSES)],
        splits={"train": ([f for f, _ in files], np.array([y for _, y in files]))},
        decode=CentreCrop(64),
    )
    start = time.perf_counter()
    store = pack(folder, plan, workers)
    return {"store": store, "seconds": time.perf_counter() - start, "bytes": _bytes(folder)}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def streamed_rate(store: PackedStore, order: np.ndarray, workers: int, batch: int) -> float:
    """Training-view images/s of the streamed reader, reading ahead as the trainer does."""
    options = StreamOptions(transform="crop", workers=workers, prefetch=4)
    labels = torch.from_numpy(store.labels("train").astype(np.int64))
    source = StreamSource(
        Decoder(store, workers), "train", np.arange(labels.numel()), labels, CLASSES, 224, options
    )
    steps = [
        (s, torch.from_numpy(order[s * batch : (s + 1) * batch]))
        for s in range(len(order) // batch)
    ]
    source.train_batch(steps[0][1], 0)  # the workers start
    start = time.perf_counter()
    for step, idx in source.prefetch(iter(steps), lambda s: s + 1):
        source.train_batch(idx, step + 1)
    return len(steps) * batch / (time.perf_counter() - start)


def torchvision_rate(root: Path, order: np.ndarray, workers: int, batch: int) -> float:
    """The same with torchvision's ImageFolder + PIL + DataLoader (uint8 tensors out)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    folder = datasets.ImageFolder(str(root / "train"), transform=transform)
    n = len(order) // batch * batch
    loader = DataLoader(Subset(folder, order[:n].tolist()), batch_size=batch, num_workers=workers)
    batches = iter(loader)
    next(batches)  # the workers start
    start = time.perf_counter()
    seen = sum(int(x.shape[0]) for x, _ in batches)
    return seen / (time.perf_counter() - start)


def epoch_bytes(store: PackedStore, n: int, seed: int) -> dict[str, Any]:
    """Bytes read by an epoch over a seeded subset of each size, read through the store."""
    rng = np.random.default_rng(seed)
    out = {}
    for fraction in KEPT:
        ids = np.sort(rng.choice(n, round(fraction * n), replace=False))
        before = store.bytes_read
        start = time.perf_counter()
        for _ in store.read_many("train", rng.permutation(ids)):
            pass
        out[f"{fraction:g}"] = {
            "bytes": store.bytes_read - before,
            "seconds": time.perf_counter() - start,
        }
    full = out["1"]["bytes"]
    for row in out.values():
        row["share_of_full"] = row["bytes"] / full
    return out


def library_stores(work: Path, files: list[tuple[Path, int]], subset: np.ndarray) -> dict:
    """litdata's optimized format and webdataset's tar shards, where those libraries import:
    packing seconds and bytes, and the seconds and bytes of reading `subset` by index."""
    out: dict[str, Any] = {}
    try:
        import litdata
    except ImportError as err:
        out["litdata"] = f"not measured: {err}"
    else:
        folder = work / "litdata"
        start = time.perf_counter()
        if not (folder / "index.json").exists():
            litdata.optimize(
                fn=_litdata_item,
                inputs=[(str(f), y) for f, y in files],
                output_dir=str(folder),
                chunk_bytes="64MB",
                num_workers=1,
            )
        packed = time.perf_counter() - start
        dataset = litdata.StreamingDataset(str(folder))
        start = time.perf_counter()
        read = sum(len(dataset[int(i)]["image"]) for i in subset)
        out["litdata"] = {
            "pack_seconds": packed,
            "bytes": _bytes(folder),
            "subset_read_seconds": time.perf_counter() - start,
            "subset_image_bytes": read,
        }
    try:
        import webdataset
    except ImportError as err:
        out["webdataset"] = f"not measured: {err}"
    else:
        folder = work / "webdataset"
        folder.mkdir(exist_ok=True)
        start = time.perf_counter()
        with webdataset.ShardWriter(str(folder / "shard-%05d.tar"), maxsize=64 << 20) as sink:
            for k, (f, y) in enumerate(files):
                sink.write({"__key__": f"{k:07d}", "jpg": f.read_bytes(), "cls": y})
        packed = time.perf_counter() - start
        wanted = {f"{k:07d}" for k in subset.tolist()}
        start = time.perf_counter()
        read = 0
        shards = sorted(str(p) for p in folder.glob("*.tar"))
        for sample in webdataset.WebDataset(shards, shardshuffle=False):
            if sample["__key__"] in wanted:
                read += len(sample["jpg"])
        out["webdataset"] = {
            "pack_seconds": packed,
            "bytes": _bytes(folder),
            "subset_read_seconds": time.perf_counter() - start,
            "subset_image_bytes": read,
            "note": "no random access by index: a subset is read by scanning every shard",
        }
    return out


def _litdata_item(item: tuple[str, int]) -> dict[str, Any]:
    path, label = item
    return {"image": Path(path).read_bytes(), "label": label}


def peak_rss_mib() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": own, "largest_child": children}


def compare_readers(
    store: PackedStore, tree: Path, order: np.ndarray, workers: list[int], batch: int, rounds: int
) -> list[dict[str, Any]]:
    """Images/s per worker of both readers at each worker count: medians over interleaved
    rounds (the reader that goes first alternates, so neither always meets a warm cache)."""
    rates: dict[tuple[int, str], list[float]] = {}
    for round_ in range(rounds):
        for w in workers:
            turns = ("streamed", "torchvision") if round_ % 2 == 0 else ("torchvision", "streamed")
            for name in turns:
                rate = (
                    streamed_rate(store, order, w, batch)
                    if name == "streamed"
                    else torchvision_rate(tree, order, w, batch)
                )
                rates.setdefault((w, name), []).append(rate / w)
    rows = []
    for w in workers:
        streamed = statistics.median(rates[(w, "streamed")])
        reference = statistics.median(rates[(w, "torchvision")])
        rows.append(
            {
                "workers": w,
                "rounds": rounds,
                "streamed_images_per_s_per_worker": streamed,
                "torchvision_images_per_s_per_worker": reference,
                "streamed_over_torchvision": streamed / reference,
                "streamed_each_round": rates[(w, "streamed")],
                "torchvision_each_round": rates[(w, "torchvision")],
            }
        )
    return rows


def readers_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (the docs' table is this output)."""
    lines = [
        "| workers | streamed img/s per worker | torchvision img/s per worker | ratio |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['workers']} | {row['streamed_images_per_s_per_worker']:.1f} "
            f"| {row['torchvision_images_per_s_per_worker']:.1f} "
            f"| {row['streamed_over_torchvision']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed stream")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per reader")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[max(1, usable_cores() - 1)])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument("--work", default="/tmp/prunebench-stream-bench")
    parser.add_argument("--libraries", action="store_true", help="litdata and webdataset too")
    parser.add_argument("--out", default="stream_speed.json")
    args = parser.parse_args(argv)
    if args.batches < 2 or args.repeats < 1 or min(args.workers) < 1:
        parser.error(
            f"--batches {args.batches} --repeats {args.repeats} --workers {args.workers}: "
            "at least 2 batches (the first starts the workers, untimed), 1 round, 1 worker"
        )
    data = Path(os.environ.get("PRUNEBENCH_DATA", "~/.cache/prunebench/data")).expanduser()
    work = Path(args.work)
    files = make_tree(data / "cifar10-jpg.tar.gz", work / "tree", args.images)
    packed = pack_store(work / "store", files, usable_cores())
    store = packed["store"]
    order = np.random.default_rng(0).permutation(len(files))[: args.batches * args.batch_size]
    readers = compare_readers(
        store, work / "tree", order, args.workers, args.batch_size, args.repeats
    )
    subset = np.sort(np.random.default_rng(1).choice(len(files), len(files) // 10, replace=False))
    result = {
        "images": len(files),
        "source_bytes": sum(f.stat().st_size for f, _ in files),
        "pack_seconds": packed["seconds"],
        "store_bytes": packed["bytes"],
        "batch_size": args.batch_size,
        "timed_images": int(order.size),
        "readers": readers,
        "epoch_bytes": epoch_bytes(store, len(files), seed=2),
        "peak_rss_mib": peak_rss_mib(),
    }
    start = time.perf_counter()
    read = sum(len(b) for b in store.read_many("train", subset))
    result["stores"] = {
        "prunebench": {
            "pack_seconds": packed["seconds"],
            "bytes": packed["bytes"],
            "subset_read_seconds": time.perf_counter() - start,
            "subset_image_bytes": read,
        }
    }
    if args.libraries:
        result["stores"].update(library_stores(work, files, subset))
    write_json(args.out, result)
    for key, value in result.items():
        if key != "readers":
            print(f"{key}: {value}")
    print(readers_table(readers))
