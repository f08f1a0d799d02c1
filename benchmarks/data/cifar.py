"""CIFAR-10 and CIFAR-100, from torchvision's pickles."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.download import Remote
from benchmarks.data.loading import DATASETS, Source
from benchmarks.data.locate import locate
from benchmarks.errors import DataError


@DATASETS.register("cifar10")
def _cifar10(source: Source) -> DataSet:
    folder = source.root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    files = locate(source, [[folder / n for n in names]], lambda: _cifar_remotes("CIFAR10"))
    return cached(
        "cifar10",
        files,
        source,
        lambda: _decode_cifar("cifar10", files[:5], files[5], files[6], "labels", "label_names"),
    )


@DATASETS.register("cifar100")
def _cifar100(source: Source) -> DataSet:
    folder = source.root / "cifar-100-python"
    files = locate(
        source,
        [[folder / n for n in ("train", "test", "meta")]],
        lambda: _cifar_remotes("CIFAR100"),
    )
    return cached(
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
    return assemble(name, (train_x, train_y), _cifar_batch(test, label_key), classes)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    blob = _unpickle(path, "data", label_key)
    data = np.asarray(blob["data"])
    labels = np.asarray(blob[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    return data.reshape(-1, 3, 32, 32), labels


# Besides plain values, an official CIFAR pickle holds numpy arrays (written by numpy 1 or 2,
# and bytes as _codecs.encode when Python 3 writes protocol 2): nothing else is resolved.
CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official files hold, so a planted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR pickle never holds; refused unread"
            )
        return super().find_class(module, name)


def _unpickle(path: Path, *keys: str) -> dict[str, Any]:
    """A CIFAR pickle; any failure to unpickle (many exception types) is one DataError."""
    try:
        with path.open("rb") as f:
            blob = _CifarUnpickler(f, encoding="latin1").load()
    except Exception as err:
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from None
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DataError(f"{path}: CIFAR pickle without {', '.join(missing)}")
    return blob
