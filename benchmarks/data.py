"""Data sets as whole uint8 tensors in memory, from files in the layouts users already have.

Every benchmark data set fits in memory as uint8, so training needs no DataLoader and
augmentation runs batched on the device. Decoding is the slow part (60,000 JPEGs take
about 10 s), so file-based loaders cache their decoded tensors, keyed by the source
files' paths, sizes and mtimes: a changed file is decoded again, an unchanged one never.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import numbers
import os
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from benchmarks.atomic import atomic_write
from benchmarks.cache import content_key
from benchmarks.download import Remote, download_lock, fetch
from benchmarks.errors import ConfigError, DataError
from benchmarks.registry import Registry

DEFAULT_ROOT = "~/.cache/prunebench/data"
DEFAULT_CACHE = "~/.cache/prunebench"
CACHE_FORMAT = 1
HOW_TO_GET = (
    "get them with data.download=auto or data.download=true (the official download, needs "
    "internet), or point data.root or the environment variable PRUNEBENCH_DATA at a folder "
    "that holds them"
)
log = logging.getLogger(__name__)
CACHE_HINT = "point data.cache_dir or PRUNEBENCH_CACHE at a writable folder"
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_IMAGES, IDX_LABELS = 2051, 2049
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
GRAY_MODES = frozenset({"1", "L", "LA"})
SPLITS = ("train", "test")
STATS_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True, eq=False)
class DataSet:
    """A data set's images and labels; its invariants are checked on construction.

    Equality is identity: comparing whole tensors field by field is never what a caller wants.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    # positions in the training tensors of the data set's own validation split (CINIC-10's
    # valid), used when data.val_size does not carve one; None where it has none
    val_index: torch.Tensor | None = None
    # Under data.max_train/max_test: each training example's index in the full training
    # split, that split's size and the full data set's fingerprint. Exports, kept subsets
    # and precomputed scores are keyed by these, so they name the same examples whatever
    # the subset.
    full_train_index: np.ndarray | None = None
    full_n_train: int | None = None
    full_fingerprint: str | None = None

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.device.type != "cpu":
                raise DataError(f"{self.name}: {split} images are not uint8 [N, C, H, W] on CPU")
            if not x.is_contiguous():
                raise DataError(f"{self.name}: {split} images are not contiguous")
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {x.shape[0]} {split} images but labels of shape "
                    f"{tuple(y.shape)} and dtype {y.dtype}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataError(
                    f"{self.name}: {split} labels span {int(y.min())}..{int(y.max())}, "
                    f"outside the {len(self.classes)} classes"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train_x.shape[1:])} but test images "
                f"are {tuple(self.test_x.shape[1:])}"
            )
        if not len(self.mean) == len(self.std) == self.in_channels:
            raise DataError(f"{self.name}: mean/std do not have one value per channel")
        if self.val_index is not None and (
            self.val_index.dtype != torch.int64 or self.val_index.dim() != 1
        ):
            raise DataError(f"{self.name}: its validation indices are not a 1-d int64 tensor")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def origin(self) -> np.ndarray:
        """Each training example's index in the full data set's training split."""
        if self.full_train_index is None:
            return np.arange(self.train_y.shape[0])
        return self.full_train_index

    @property
    def source_n_train(self) -> int:
        """The size of the full training split this one was drawn from."""
        return self.full_n_train or int(self.train_y.shape[0])

    @property
    def source_fingerprint(self) -> str:
        """The fingerprint of the full data set this one was drawn from (itself if not drawn)."""
        return self.full_fingerprint or self.fingerprint

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])


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


def stratified_split(
    labels: torch.Tensor, size: int | float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, part) sorted indices; `part` keeps each class's share of the labels.

    Per-class counts use largest-remainder rounding (ties to the lower class), so the
    part has exactly the size asked; which examples of a class go to it is seeded.
    """
    labels = labels.reshape(-1).cpu()
    n = labels.numel()
    k = _part_size(size, n)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = _largest_remainder(counts, k)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    grouped = perm[torch.sort(inverse[perm], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts.repeat_interleave(counts)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[grouped[rank < quota.repeat_interleave(counts)]] = True
    return torch.nonzero(~chosen).flatten(), torch.nonzero(chosen).flatten()


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' bytes in order: equal content gives equal fingerprints."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy())
    return digest.hexdigest()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of x/255, exact, from value counts (no float copy of x).

    Counted over chunks of images, so that the temporary copy of one channel stays small
    next to a tensor of many gigabytes.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    chunk = max(1, STATS_CHUNK_BYTES // max(1, x[:1, 0].numel()))
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.zeros(256, dtype=torch.float64)
        for start in range(0, x.shape[0], chunk):
            part = x[start : start + chunk, c].reshape(-1)
            counts += torch.bincount(part, minlength=256).double()
        mean = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - mean) ** 2).sum() / counts.sum())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


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


def _part_size(size: object, n: int) -> int:
    allowed = f"use an integer in [1, {n - 1}] or a fraction in (0, 1) of the {n} examples"
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        k = int(size)
    elif isinstance(size, numbers.Real) and not isinstance(size, bool) and 0 < size < 1:
        k = round(float(size) * n)
    else:
        raise ConfigError(f"split size {size!r} is out of range: {allowed}")
    if not 1 <= k <= n - 1:
        raise ConfigError(f"split size {size!r} gives {k} examples: {allowed}")
    return k


def _largest_remainder(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Integer per-class quotas summing to k, proportional to counts (exact integer arithmetic)."""
    n = int(counts.sum())
    exact = counts * k
    quota = exact // n
    order = torch.sort(exact - quota * n, descending=True, stable=True).indices
    quota[order[: k - int(quota.sum())]] += 1
    return quota


def _assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: Sequence[str],
) -> DataSet:
    """A DataSet from decoded arrays, with the full training set's statistics and fingerprint."""
    tx, ty, vx, vy = (
        torch.from_numpy(np.require(a, dtype=dt, requirements=["C", "W"]))
        for a, dt in zip((*train, *test), (np.uint8, np.int64) * 2, strict=True)
    )
    mean, std = channel_stats(tx)
    return DataSet(name, tx, ty, vx, vy, tuple(classes), mean, std, fingerprint(tx, ty, vx, vy))


# --- cache ---------------------------------------------------------------------------------


def _cached(
    loader: str, files: Sequence[Path], source: Source, decode: Callable[[], DataSet]
) -> DataSet:
    """The decoded data set from the cache, decoding (once, under a lock) when absent or stale."""
    material = {
        "loader": loader,
        "format": CACHE_FORMAT,
        "files": [[str(f.resolve()), *_size_and_mtime(f)] for f in files],
    }
    path = source.cache_dir / "data" / f"{loader}-{content_key(material)}.pt"
    found = _read_cache(path, loader)
    if found is not None:
        return found
    with _cache_lock(path):
        found = _read_cache(path, loader, report=False)
        if found is None:
            found = decode()
            _write_cache(path, found)
    return found


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _read_cache(path: Path, loader: str, report: bool = True) -> DataSet | None:
    """The cached data set, or None when absent, unreadable or altered (then rebuilt).

    The fingerprint is recomputed from the tensors read, so that flipped bytes on disk are
    caught rather than trained on under the stored fingerprint (the cost, measured in the
    README's Results section, is one sha256 pass over the decoded data).
    """
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        if blob["format"] != CACHE_FORMAT:
            return None
        ds = DataSet(
            name=loader,
            train_x=blob["train_x"],
            train_y=blob["train_y"],
            test_x=blob["test_x"],
            test_y=blob["test_y"],
            classes=tuple(str(c) for c in blob["classes"]),
            mean=tuple(float(m) for m in blob["mean"]),
            std=tuple(float(s) for s in blob["std"]),
            fingerprint=str(blob["fingerprint"]),
            val_index=blob.get("val_index"),
        )
        computed = fingerprint(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    except Exception as err:
        problem = f"is unreadable ({type(err).__name__})"
    else:
        if computed == ds.fingerprint:
            return ds
        problem = (
            f"content hashes to {computed[:12]}..., not to its stored fingerprint "
            f"{ds.fingerprint[:12]}..."
        )
    if report:
        log.warning("data cache %s %s; rebuilding it from the source files", path, problem)
    return None


@contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.lock")
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot use the data cache {path.parent} ({err}); {CACHE_HINT}") from None
    try:
        yield
    finally:
        lock.release()


def _write_cache(path: Path, ds: DataSet) -> None:
    """Write atomically: a reader (or a killed writer) never leaves half a cache file."""
    blob = {
        "format": CACHE_FORMAT,
        "train_x": ds.train_x,
        "train_y": ds.train_y,
        "test_x": ds.test_x,
        "test_y": ds.test_y,
        "classes": list(ds.classes),
        "mean": list(ds.mean),
        "std": list(ds.std),
        "fingerprint": ds.fingerprint,
        "val_index": ds.val_index,
    }
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as err:
        raise DataError(f"cannot write the data cache {path} ({err}); {CACHE_HINT}") from None


# --- locating and downloading files ------------------------------------------------------


def _locate(
    source: Source,
    layouts: Sequence[Sequence[Path]],
    remotes: Callable[[], Sequence[Remote]] | None,
    alternatives: str = "",
    how_to_get: str = HOW_TO_GET,
) -> list[Path]:
    """The files of the first complete layout, downloading the official files when allowed.

    `remotes` is None for a data set without a public download: `download=auto` then only
    says where to get the files, `download=true` says there is nothing to download.
    """
    found = _first_complete(layouts)
    if found is None and source.download is True and remotes is None:
        raise DataError(
            f"{source.name}: data.download=true but it has no public download; {how_to_get}"
        )
    if found is None and source.download and remotes is not None:
        with download_lock(source.name, source.root):
            found = _first_complete(layouts)
            if found is None:
                fetch(source.name, remotes(), source.root, source.mirror)
                found = _first_complete(layouts)
    if found is None:
        expected = ", ".join(str(p) for p in layouts[0])
        raise DataError(
            f"{source.name}: data files not found; expected {expected}{alternatives}; {how_to_get}"
        )
    return found


def _first_complete(layouts: Sequence[Sequence[Path]]) -> list[Path] | None:
    return next((list(files) for files in layouts if all(f.is_file() for f in files)), None)


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name ends in .gz."""
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        what = "not a valid gzip file" if path.suffix == ".gz" else "unreadable"
        raise DataError(f"{path}: {what} ({err})") from None


# --- digits --------------------------------------------------------------------------------


@DATASETS.register("digits")
def _digits(source: Source) -> DataSet:
    """sklearn's 8x8 digits: shipped inside sklearn, so always there, even offline."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * 255 / 16).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(torch.from_numpy(y), 360, seed=0)
    return _assemble("digits", (x[train], y[train]), (x[test], y[test]), DIGIT_CLASSES)


# --- MNIST and Fashion-MNIST (IDX files) ---------------------------------------------------


def _register_idx(name: str, folder: str, torchvision_name: str, classes: tuple[str, ...]) -> None:
    """An MNIST-format data set, found in the Debian, torchvision or flat layout under root."""

    def load(source: Source) -> DataSet:
        dirs = (source.root / folder, source.root / torchvision_name / "raw", source.root)
        preferred = (".gz", ""), ("", ".gz"), ("", ".gz")
        layouts = [
            [d / (base + ext) for base in MNIST_FILES]
            for d, exts in zip(dirs, preferred, strict=True)
            for ext in exts
        ]

        hint = f" (or the same files, plain or gzip, in {dirs[1]} or {dirs[2]})"
        files = _locate(source, layouts, lambda: _idx_remotes(torchvision_name), hint)
        return _cached(name, files, source, lambda: _decode_idx(name, files, classes))

    DATASETS.register(name)(load)


def _idx_remotes(torchvision_name: str) -> list[Remote]:
    """torchvision's mirrors and MD5s, its raw/ layout (which the loader reads as it is)."""
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, torchvision_name)
    return [
        Remote(tuple(m + file for m in dataset.mirrors), f"{torchvision_name}/raw/{file}", md5)
        for file, md5 in dataset.resources
    ]


def _decode_idx(name: str, files: Sequence[Path], classes: tuple[str, ...]) -> DataSet:
    train_x, train_y, test_x, test_y = (
        _read_idx(f, magic) for f, magic in zip(files, (IDX_IMAGES, IDX_LABELS) * 2, strict=True)
    )
    return _assemble(name, (train_x[:, None], train_y), (test_x[:, None], test_y), classes)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array of unsigned bytes, checked against its header (magic, dims, length)."""
    raw = _read_bytes(path)
    kind = "images" if magic == IDX_IMAGES else "labels"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, shorter than its header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header says {kind} of shape {dims} ({expected} bytes) but the file "
            f"holds {len(raw)} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


_register_idx("mnist", "mnist", "MNIST", DIGIT_CLASSES)
_register_idx("fashion_mnist", "fashion-mnist", "FashionMNIST", FASHION_CLASSES)


# --- CIFAR-10 and CIFAR-100 (torchvision's pickles) ----------------------------------------


@DATASETS.register("cifar10")
def _cifar10(source: Source) -> DataSet:
    folder = source.root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    files = _locate(source, [[folder / n for n in names]], lambda: _cifar_remotes("CIFAR10"))
    return _cached(
        "cifar10",
        files,
        source,
        lambda: _decode_cifar("cifar10", files[:5], files[5], files[6], "labels", "label_names"),
    )


@DATASETS.register("cifar100")
def _cifar100(source: Source) -> DataSet:
    folder = source.root / "cifar-100-python"
    files = _locate(
        source,
        [[folder / n for n in ("train", "test", "meta")]],
        lambda: _cifar_remotes("CIFAR100"),
    )
    return _cached(
        "cifar100",
        files,
        source,
        lambda: _decode_cifar(
            "cifar100", files[:1], files[1], files[2], "fine_labels", "fine_label_names"
        ),
    )


def _cifar_remotes(torchvision_name: str) -> list[Remote]:
    """The python-pickle tarball at the URL and MD5 torchvision uses, unpacked into the root."""
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, torchvision_name)
    return [Remote((dataset.url,), dataset.filename, dataset.tgz_md5, extract=True)]


def _decode_cifar(
    name: str, train: Sequence[Path], test: Path, meta: Path, label_key: str, names_key: str
) -> DataSet:
    parts = [_cifar_batch(f, label_key) for f in train]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    classes = _unpickle(meta, names_key)[names_key]
    return _assemble(name, (train_x, train_y), _cifar_batch(test, label_key), classes)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    blob = _unpickle(path, "data", label_key)
    data = np.asarray(blob["data"])
    labels = np.asarray(blob[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    return data.reshape(-1, 3, 32, 32), labels


def _unpickle(path: Path, *keys: str) -> dict[str, Any]:
    """A CIFAR pickle; any failure to unpickle (many exception types) is one DataError."""
    try:
        with path.open("rb") as f:
            blob = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from None
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DataError(f"{path}: CIFAR pickle without {', '.join(missing)}")
    return blob


# --- SVHN (torchvision's .mat files) -------------------------------------------------------


@DATASETS.register("svhn")
def _svhn(source: Source) -> DataSet:
    files = [source.root / "train_32x32.mat", source.root / "test_32x32.mat"]

    files = _locate(source, [files], _svhn_remotes)
    return _cached(
        "svhn", files, source, lambda: _assemble("svhn", *map(_read_svhn, files), DIGIT_CLASSES)
    )


def _svhn_remotes() -> list[Remote]:
    """torchvision's URLs and MD5s of the two .mat files."""
    import torchvision.datasets

    splits = torchvision.datasets.SVHN.split_list
    return [Remote((url,), file, md5) for url, file, md5 in (splits[s] for s in SPLITS)]


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as [N, C, H, W] and labels with digit 0 as 0 (the file stores it as 10)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except (OSError, ValueError, EOFError, KeyError, MatReadError) as err:
        raise DataError(f"{path}: not a readable SVHN .mat file ({err})") from None
    if x.ndim != 4 or x.shape[3] != y.size:
        raise DataError(f"{path}: X of shape {x.shape} does not match {y.size} labels")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return x.transpose(3, 2, 0, 1), labels


# --- ImageFolder trees, as folders or tar archives -----------------------------------------


@dataclass(frozen=True)
class _Image:
    split: str
    label: str
    file: str
    where: str
    pixels: np.ndarray


@DATASETS.register("imagefolder")
def _imagefolder(source: Source) -> DataSet:
    path = source.path
    if path is None:
        raise ConfigError(
            f"{source.name}: data.path is not set; set it to a folder with train/<class>/ and "
            "test/<class>/ images, or to a .tar/.tar.gz of one"
        )
    if path.is_dir():
        files = _folder_images(path, source.name)
        return _cached(
            "imagefolder",
            files,
            source,
            lambda: _decode_tree(source.name, _read_folder(path, files)),
        )
    if path.is_file():
        return _cached(
            "imagefolder", [path], source, lambda: _decode_tree(source.name, _read_tar(path))
        )
    raise DataError(
        f"{source.name}: {path} not found (data.path, resolved against data.root); it "
        "should be a folder with train/<class>/ and test/<class>/ images or a .tar/.tar.gz of "
        "one; point data.root or the environment variable PRUNEBENCH_DATA at the folder that "
        "holds it"
    )


def _tree_key(
    parts: Sequence[str], splits: Sequence[str] = SPLITS
) -> tuple[str, str, str, str] | None:
    """(top folder, split, class, file) for an image at [top/]split/class/file, else None."""
    if len(parts) not in (3, 4) or parts[-3] not in splits:
        return None
    file = parts[-1]
    if file.startswith(".") or PurePosixPath(file).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return (parts[0] if len(parts) == 4 else "", parts[-3], parts[-2], file)


def _folder_images(path: Path, name: str, splits: Sequence[str] = SPLITS) -> list[Path]:
    missing = [str(path / s) for s in splits if not (path / s).is_dir()]
    if missing:
        needed = " and ".join(f"{path}/{s}/<class>/<image>" for s in splits)
        raise DataError(f"{name}: {', '.join(missing)} not found; an image folder needs {needed}")
    files = (f for f in path.glob("*/*/*") if f.is_file())
    return sorted(f for f in files if _tree_key(f.relative_to(path).parts, splits) is not None)


def _read_folder(root: Path, files: Sequence[Path], splits: Sequence[str] = SPLITS) -> list[_Image]:
    images = []
    for f in files:
        _, split, label, file = _tree_key(f.relative_to(root).parts, splits)
        try:
            data = f.read_bytes()
        except OSError as err:
            raise DataError(f"{f}: unreadable ({err})") from None
        images.append(_Image(split, label, file, str(f), _decode_image(data, str(f))))
    return images


def _read_tar(archive: Path, splits: Sequence[str] = SPLITS) -> list[_Image]:
    """Decode the images of a tar archive while streaming it: nothing is extracted to disk."""
    images, tops = [], set()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                key = _tree_key(parts, splits) if member.isfile() else None
                if key is None:
                    continue
                top, split, label, file = key
                tops.add(top)
                where = f"{archive}:{member.name}"
                data = tar.extractfile(member).read()
                images.append(_Image(split, label, file, where, _decode_image(data, where)))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{archive}: not a readable tar archive ({err})") from None
    if len(tops) > 1:
        raise DataError(
            f"{archive}: holds several image trees ({', '.join(sorted(t + '/' for t in tops))}); "
            f"expected one [top/]<split>/<class>/ tree with splits {', '.join(splits)}"
        )
    return images


def _decode_image(data: bytes, where: str) -> np.ndarray:
    """Pixels as [H, W] for grayscale images, [H, W, 3] for any other."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: cannot decode image ({err})") from None


def _decode_tree(name: str, images: list[_Image]) -> DataSet:
    classes, arrays = _tree_arrays(name, images, SPLITS)
    return _assemble(name, arrays["train"], arrays["test"], classes)


def _tree_arrays(
    name: str, images: list[_Image], splits: Sequence[str]
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Examples sorted by (class, file name), so that their order never depends on the source."""
    images.sort(key=lambda im: (im.label, im.file))
    by_split = {s: [im for im in images if im.split == s] for s in splits}
    classes = _same_classes(name, {s: [im.label for im in by_split[s]] for s in splits})
    reference = images[0]
    for im in images:
        if im.pixels.shape[:2] != reference.pixels.shape[:2]:
            raise DataError(
                f"{name}: {im.where} is {_size(im)} but {reference.where} is {_size(reference)}; "
                "all images must have one size"
            )
    gray = all(im.pixels.ndim == 2 for im in images)
    index = {label: i for i, label in enumerate(classes)}
    return classes, {s: _stack(by_split[s], gray, index) for s in splits}


def _same_classes(name: str, labels: Mapping[str, Sequence[str]]) -> list[str]:
    """The sorted class names, the same in every split (the first split names them)."""
    (first, named), *others = labels.items()
    classes = sorted(set(named))
    for split, other_labels in others:
        other = sorted(set(other_labels))
        if not classes or classes != other:
            raise DataError(
                f"{name}: {first} and {split} must have the same non-empty class folders; "
                f"{first} has {classes}, {split} has {other}"
            )
    return classes


def _size(image: _Image) -> str:
    return f"{image.pixels.shape[1]}x{image.pixels.shape[0]}"


def _stack(
    images: Sequence[_Image], gray: bool, index: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    if gray:
        x = np.stack([im.pixels for im in images])[:, None]
    else:
        rgb = [
            im.pixels if im.pixels.ndim == 3 else np.repeat(im.pixels[..., None], 3, 2)
            for im in images
        ]
        x = np.stack(rgb).transpose(0, 3, 1, 2)
    return x, np.array([index[im.label] for im in images], dtype=np.int64)


# --- CINIC-10 (the official train/valid/test image tree, folder or archive) -----------------

CINIC_SPLITS = ("train", "valid", "test")
CINIC_COUNTS = {"train": 90_000, "valid": 90_000, "test": 90_000}
CINIC_URLS = (
    "https://datashare.is.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
    "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
)
CINIC_VALID = ("train", "val")
CINIC_ARCHIVE = "CINIC-10.tar.gz"


@DATASETS.register("cinic10")
def _cinic10(source: Source) -> DataSet:
    """CINIC-10 (Darlow et al. 2018); `valid` merged into training (data.valid=train, as Data
    Diet did) or kept apart as the validation split (data.valid=val)."""
    valid = source.options.get("valid", "train")
    if valid not in CINIC_VALID:
        raise ConfigError(
            f"data.valid={valid!r} is not allowed; use train (CINIC-10's valid split merged "
            "into training) or val (valid as the validation split)"
        )
    path = source.path or source.root / CINIC_ARCHIVE
    if path.is_dir():
        files = _folder_images(path, source.name, CINIC_SPLITS)
        images = functools.partial(_read_folder, path, files, CINIC_SPLITS)
    else:
        files = _locate(source, [[path]], _official(source, path, CINIC_ARCHIVE, _cinic_remotes))
        images = functools.partial(_read_tar, path, CINIC_SPLITS)
    ds = _cached("cinic10", files, source, lambda: _decode_cinic(source.name, images()))
    return ds if valid == "val" else replace(ds, val_index=None)


def _official(
    source: Source, path: Path, official_name: str, remotes: Callable[[], list[Remote]]
) -> Callable[[], list[Remote]] | None:
    """The download, where `path` is where it lands (the official name in the data root)."""
    return remotes if path == source.root / official_name else None


def _cinic_remotes() -> list[Remote]:
    return [Remote(CINIC_URLS, CINIC_ARCHIVE, None, verify=_verify_cinic)]


def _decode_cinic(name: str, images: list[_Image]) -> DataSet:
    """Training tensors hold train then valid; val_index marks valid's positions."""
    classes, arrays = _tree_arrays(name, images, CINIC_SPLITS)
    (tx, ty), (vx, vy) = arrays["train"], arrays["valid"]
    ds = _assemble(
        name, (np.concatenate([tx, vx]), np.concatenate([ty, vy])), arrays["test"], classes
    )
    return replace(ds, val_index=torch.arange(len(ty), len(ty) + len(vy)))


def _verify_cinic(archive: Path) -> None:
    """The publisher gives no checksum: check that the archive is the whole tree instead."""
    counts = dict.fromkeys(CINIC_SPLITS, 0)
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                key = _tree_key(PurePosixPath(member.name).parts, CINIC_SPLITS)
                if member.isfile() and key is not None:
                    counts[key[1]] += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"not a readable tar archive ({err})") from None
    if counts != CINIC_COUNTS:
        raise DataError(f"the archive holds {counts} images, the official one {CINIC_COUNTS}")


# --- Tiny ImageNet (the official zip or its unpacked folder) ------------------------------

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# Stanford publishes no checksum; this is the MD5 that Avalanche's loader (ContinualAI/
# avalanche, benchmarks/datasets/tiny_imagenet) and other independent loaders check.
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_TOP = "tiny-imagenet-200"
TINY_ARCHIVE = f"{TINY_TOP}.zip"


@DATASETS.register("tiny_imagenet")
def _tiny_imagenet(source: Source) -> DataSet:
    """Tiny ImageNet: 200 classes of 64x64 images; the labelled val split is the test set."""
    path = source.path or source.root / TINY_ARCHIVE
    if path.is_dir():
        files = [path / "val" / "val_annotations.txt"]
        if not files[0].is_file():
            raise DataError(
                f"{source.name}: {files[0]} not found; {path} should be the unpacked "
                f"{TINY_TOP}/ folder (train/<wnid>/images/, val/images/, val/val_annotations.txt)"
            )
        files += sorted(path.glob("train/*/images/*")) + sorted(path.glob("val/images/*"))
        members = functools.partial(_folder_members, path, files)
    else:
        files = _locate(source, [[path]], _official(source, path, TINY_ARCHIVE, _tiny_remotes))
        members = functools.partial(_zip_members, path, TINY_TOP)
    return _cached(
        "tiny_imagenet", files, source, lambda: _decode_tiny(source.name, members(), str(path))
    )


def _tiny_remotes() -> list[Remote]:
    return [Remote((TINY_URL,), TINY_ARCHIVE, TINY_MD5)]


def _folder_members(folder: Path, files: Sequence[Path]) -> dict[str, Callable[[], bytes]]:
    """The files by their path below `folder`, each read when called."""
    return {f.relative_to(folder).as_posix(): f.read_bytes for f in files}


def _zip_members(archive: Path, top: str) -> dict[str, Callable[[], bytes]]:
    """The archive's files under `top/`, by their path below it, each read when called."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive}: not a readable zip archive ({err})") from None
    prefix = f"{top}/"
    return {
        info.filename.removeprefix(prefix): functools.partial(zf.read, info.filename)
        for info in zf.infolist()
        if info.filename.startswith(prefix) and not info.is_dir()
    }


def _decode_tiny(name: str, members: Mapping[str, Callable[[], bytes]], where: str) -> DataSet:
    annotations = members.get("val/val_annotations.txt")
    if annotations is None:
        raise DataError(f"{where}: no val/val_annotations.txt; not the Tiny ImageNet layout")
    val_labels = {}
    for line in annotations().decode().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            val_labels[fields[0]] = fields[1]
    entries = []  # (class, file, split, member): sorted, the order never depends on the source
    for rel in members:
        parts = rel.split("/")
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            split, label = "train", parts[1]
        elif len(parts) == 3 and parts[:2] == ["val", "images"]:
            if parts[2] not in val_labels:
                raise DataError(f"{where}: {rel} has no line in val/val_annotations.txt")
            split, label = "test", val_labels[parts[2]]
        else:
            continue
        entries.append((label, parts[-1], split, rel))
    entries.sort()
    by_split = {s: [e for e in entries if e[2] == s] for s in SPLITS}
    classes = _same_classes(name, {s: [e[0] for e in by_split[s]] for s in SPLITS})
    ordered = by_split["train"] + by_split["test"]
    x = _decode_same_size(
        [members[e[3]] for e in ordered], [f"{where}:{e[3]}" for e in ordered], name
    )
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[e[0]] for e in ordered], dtype=np.int64)
    n = len(by_split["train"])
    return _assemble(name, (x[:n], y[:n]), (x[n:], y[n:]), classes)


# files whose bytes are read ahead of the decoding processes (a few MB of compressed images)
DECODE_BLOCK = 4096


def _decode_same_size(
    reads: Sequence[Callable[[], bytes]], wheres: Sequence[str], what: str
) -> np.ndarray:
    """[N, 3, H, W] uint8 (grey images as RGB), all one size: this process reads the files'
    bytes DECODE_BLOCK at a time and one process per usable core decodes them straight into
    the preallocated array, so that the peak is that array plus one block of files."""
    import multiprocessing

    from tqdm import tqdm

    x = None
    with (
        multiprocessing.get_context("fork").Pool(_usable_cores()) as pool,
        tqdm(total=len(reads), desc=what, unit="img") as bar,
    ):
        for start in range(0, len(reads), DECODE_BLOCK):
            stop = min(start + DECODE_BLOCK, len(reads))
            jobs = [(reads[i](), wheres[i]) for i in range(start, stop)]
            for i, pixels in enumerate(pool.imap(_decode_rgb, jobs, chunksize=64), start):
                if x is None:
                    x = np.empty((len(reads), *pixels.shape), dtype=np.uint8)
                if pixels.shape != x.shape[1:]:
                    raise DataError(
                        f"{what}: {wheres[i]} is {pixels.shape[2]}x{pixels.shape[1]} but "
                        f"{wheres[0]} is {x.shape[3]}x{x.shape[2]}; all images must have one size"
                    )
                x[i] = pixels
                bar.update()
    return x


def _decode_rgb(job: tuple[bytes, str]) -> np.ndarray:
    """[3, H, W]; a grey image's one channel repeated."""
    pixels = _decode_image(*job)
    return (pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, 2)).transpose(2, 0, 1)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# --- downsampled ImageNet (Chrabaszcz et al. 2017: the official npz batches) ----------------

DOWNSAMPLED_TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
DOWNSAMPLED_VAL = "val_data.npz"
IMAGENET_CLASSES = 1000
IMAGENET_HOME = "https://image-net.org/download-images"


def _register_downsampled(name: str, size: int) -> None:
    """ImageNet{size}x{size}: train_data_batch_1..10.npz and val_data.npz, anywhere under the
    data set's folder (the official zips unpack into one folder each)."""

    def load(source: Source) -> DataSet:
        folder = source.path or source.root / name
        wanted = (*DOWNSAMPLED_TRAIN, DOWNSAMPLED_VAL)
        found = {f.name: f for f in sorted(folder.glob("**/*.npz")) if f.name in wanted}
        layout = [found.get(w, folder / w) for w in wanted]
        how = (
            f"the files need an image-net.org login: download Imagenet{size}_train_npz and "
            f"Imagenet{size}_val_npz (Downsampled ImageNet {size}x{size}) from {IMAGENET_HOME} "
            f"and unzip them into {folder}, or point data.root or the environment variable "
            "PRUNEBENCH_DATA at a folder that holds them"
        )
        files = _locate(source, [layout], None, " (in any subfolder)", how)
        mapping = folder / "map_clsloc.txt"
        key_files = [*files, mapping] if mapping.is_file() else files
        return _cached(
            name,
            key_files,
            source,
            lambda: _decode_downsampled(name, size, files, _clsloc_names(mapping)),
        )

    DATASETS.register(name)(load)


def _clsloc_names(mapping: Path) -> tuple[str, ...]:
    """Class names of labels 1..1000: the wnids of the ILSVRC devkit's map_clsloc.txt (the
    order the npz labels follow) when it is in the folder, else the label numbers."""
    if not mapping.is_file():
        return tuple(str(i) for i in range(1, IMAGENET_CLASSES + 1))
    rows = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
    by_label = {int(row[1]): row[0] for row in rows if len(row) >= 2 and row[1].isdigit()}
    if sorted(by_label) != list(range(1, IMAGENET_CLASSES + 1)):
        raise DataError(f"{mapping}: expected one 'wnid label name' line for labels 1..1000")
    return tuple(by_label[i] for i in range(1, IMAGENET_CLASSES + 1))


def _decode_downsampled(
    name: str, size: int, files: Sequence[Path], classes: tuple[str, ...]
) -> DataSet:
    """Streamed: the labels first (small), then each batch's pixels straight into one
    preallocated uint8 array, so that the peak is that array plus one batch file."""
    labels = [_npz_array(f, "labels", np.int64, 1) - 1 for f in files]
    for f, y in zip(files, labels, strict=True):
        if y.size and (int(y.min()) < 0 or int(y.max()) >= IMAGENET_CLASSES):
            raise DataError(f"{f}: labels span {int(y.min()) + 1}..{int(y.max()) + 1}, not 1..1000")
    counts = [y.size for y in labels[:-1]]
    train_x = np.empty((sum(counts), 3, size, size), dtype=np.uint8)
    starts = np.cumsum([0, *counts])
    for f, start, count in zip(files[:-1], starts[:-1], counts, strict=True):
        train_x[start : start + count] = _npz_images(f, size, count)
    test_x = _npz_images(files[-1], size, labels[-1].size)
    return _assemble(name, (train_x, np.concatenate(labels[:-1])), (test_x, labels[-1]), classes)


def _npz_array(path: Path, key: str, dtype: type, ndim: int) -> np.ndarray:
    try:
        with np.load(path) as npz:
            array = np.asarray(npz[key])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(
            f"{path}: not a downsampled-ImageNet npz batch with '{key}' ({err})"
        ) from None
    if array.ndim != ndim:
        raise DataError(f"{path}: '{key}' has shape {array.shape}, expected {ndim} dimensions")
    return array.astype(dtype, copy=False)


def _npz_images(path: Path, size: int, count: int) -> np.ndarray:
    """[count, 3, size, size]: each row of 'data' is the R, G and B planes, row-major."""
    data = _npz_array(path, "data", np.uint8, 2)
    if data.shape != (count, 3 * size * size):
        raise DataError(
            f"{path}: 'data' is {data.shape}, expected ({count}, {3 * size * size}) for "
            f"{count} labels at {size}x{size}"
        )
    return data.reshape(count, 3, size, size)


_register_downsampled("imagenet32", 32)
_register_downsampled("imagenet64", 64)


# --- ImageNet-1k (train/ and val/ class folders), decoded once at data.resolution ----------

IMAGENET_SPLITS = {"train": "train", "test": "val"}


@DATASETS.register("imagenet")
def _imagenet(source: Source) -> DataSet:
    """ILSVRC-2012 in ImageFolder layout, each image resized (shorter side) and centre-cropped
    to data.resolution, decoded in parallel on every core the process may use."""
    resolution = source.options.get("resolution")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ConfigError(
            f"data.resolution={resolution!r} must be an integer >= 8 (pixels of the square "
            "images the data set is decoded to, e.g. 64 or 112)"
        )
    folder = source.path or source.root / "imagenet"
    class_dirs = {
        split: sorted(d for d in (folder / sub).glob("*") if d.is_dir())
        for split, sub in IMAGENET_SPLITS.items()
    }
    if not class_dirs["train"] or not class_dirs["test"]:
        raise DataError(
            f"{source.name}: data files not found; expected {folder}/train/<wnid>/*.JPEG and "
            f"{folder}/val/<wnid>/*.JPEG (the validation images in class folders); the files "
            f"need an image-net.org login ({IMAGENET_HOME}); or point data.root or the "
            "environment variable PRUNEBENCH_DATA at a folder that holds them"
        )
    # The class folders' mtimes change when files are added or removed: a cache hit costs
    # 2,000 stats, not 1.3 million.
    dirs = class_dirs["train"] + class_dirs["test"]
    return _cached(
        f"imagenet{resolution}px",
        dirs,
        source,
        lambda: _decode_imagenet(source.name, class_dirs, resolution),
    )


def _decode_imagenet(
    name: str, class_dirs: Mapping[str, Sequence[Path]], resolution: int
) -> DataSet:
    classes = [d.name for d in class_dirs["train"]]
    if [d.name for d in class_dirs["test"]] != classes:
        raise DataError(f"{name}: train/ and val/ must have the same class folders")
    arrays = {}
    for split, dirs in class_dirs.items():
        files, labels = [], []
        for label, d in enumerate(dirs):
            images = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            files += images
            labels += [label] * len(images)
        x = _decode_parallel(files, resolution, f"{name} {IMAGENET_SPLITS[split]}")
        arrays[split] = (x, np.array(labels, dtype=np.int64))
    return _assemble(name, arrays["train"], arrays["test"], classes)


def _decode_parallel(files: Sequence[Path], resolution: int, what: str) -> np.ndarray:
    """[N, 3, r, r] uint8, decoded by one process per usable core, with a progress bar."""
    import multiprocessing

    from tqdm import tqdm

    x = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    jobs = [(str(f), resolution) for f in files]
    with (
        multiprocessing.get_context("fork").Pool(_usable_cores()) as pool,
        tqdm(total=len(files), desc=f"{what} at {resolution}px", unit="img") as bar,
    ):
        for i, pixels in enumerate(pool.imap(_resize_crop, jobs, chunksize=64)):
            x[i] = pixels
            bar.update()
    return x


def _resize_crop(job: tuple[str, int]) -> np.ndarray:
    """Shorter side resized to r (bilinear, antialiased), then the central r x r, as [3, r, r].

    JPEGs are decoded at the smallest DCT scale that still covers r (PIL's draft), which is
    what makes a full ImageNet decode take minutes rather than an hour.
    """
    path, r = job
    try:
        with Image.open(path) as image:
            image.draft("RGB", (r, r))
            image = image.convert("RGB")
            w, h = image.size
            scale = r / min(w, h)
            size = (max(r, round(w * scale)), max(r, round(h * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
            left, top = round((size[0] - r) / 2), round((size[1] - r) / 2)
            image = image.crop((left, top, left + r, top + r))
            return np.asarray(image).transpose(2, 0, 1)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot decode image ({err})") from None
