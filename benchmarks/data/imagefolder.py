"""ImageFolder trees, as folders or tar archives."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from benchmarks.data.cache import cached
from benchmarks.data.dataset import SPLITS, DataSet, assemble
from benchmarks.data.decode import IMAGE_SUFFIXES, decode_image
from benchmarks.data.loading import DATASETS, Source
from benchmarks.errors import ConfigError, DataError


@dataclass(frozen=True)
class TreeImage:
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
        files = folder_images(path, source.name)
        return cached(
            "imagefolder",
            files,
            source,
            lambda: _decode_tree(source.name, read_folder(path, files)),
        )
    if path.is_file():
        return cached(
            "imagefolder", [path], source, lambda: _decode_tree(source.name, read_tar(path))
        )
    raise DataError(
        f"{source.name}: {path} not found (data.path, resolved against data.root); it "
        "should be a folder with train/<class>/ and test/<class>/ images or a .tar/.tar.gz of "
        "one; point data.root or the environment variable PRUNEBENCH_DATA at the folder that "
        "holds it"
    )


def tree_key(
    parts: Sequence[str], splits: Sequence[str] = SPLITS
) -> tuple[str, str, str, str] | None:
    """(top folder, split, class, file) for an image at [top/]split/class/file, else None."""
    if len(parts) not in (3, 4) or parts[-3] not in splits:
        return None
    file = parts[-1]
    if file.startswith(".") or PurePosixPath(file).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return (parts[0] if len(parts) == 4 else "", parts[-3], parts[-2], file)


def folder_images(path: Path, name: str, splits: Sequence[str] = SPLITS) -> list[Path]:
    missing = [str(path / s) for s in splits if not (path / s).is_dir()]
    if missing:
        needed = " and ".join(f"{path}/{s}/<class>/<image>" for s in splits)
        raise DataError(f"{name}: {', '.join(missing)} not found; an image folder needs {needed}")
    files = (f for f in path.glob("*/*/*") if f.is_file())
    return sorted(f for f in files if tree_key(f.relative_to(path).parts, splits) is not None)


def read_folder(
    root: Path, files: Sequence[Path], splits: Sequence[str] = SPLITS
) -> list[TreeImage]:
    images = []
    for f in files:
        _, split, label, file = tree_key(f.relative_to(root).parts, splits)
        try:
            data = f.read_bytes()
        except OSError as err:
            raise DataError(f"{f}: unreadable ({err})") from None
        images.append(TreeImage(split, label, file, str(f), decode_image(data, str(f))))
    return images


def read_tar(archive: Path, splits: Sequence[str] = SPLITS) -> list[TreeImage]:
    """Decode the images of a tar archive while streaming it: nothing is extracted to disk."""
    images, tops = [], set()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                key = tree_key(parts, splits) if member.isfile() else None
                if key is None:
                    continue
                top, split, label, file = key
                tops.add(top)
                where = f"{archive}:{member.name}"
                data = tar.extractfile(member).read()
                images.append(TreeImage(split, label, file, where, decode_image(data, where)))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{archive}: not a readable tar archive ({err})") from None
    if len(tops) > 1:
        raise DataError(
            f"{archive}: holds several image trees ({', '.join(sorted(t + '/' for t in tops))}); "
            f"expected one [top/]<split>/<class>/ tree with splits {', '.join(splits)}"
        )
    return images


def _decode_tree(name: str, images: list[TreeImage]) -> DataSet:
    classes, arrays = tree_arrays(name, images, SPLITS)
    return assemble(name, arrays["train"], arrays["test"], classes)


def tree_arrays(
    name: str, images: list[TreeImage], splits: Sequence[str]
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Examples sorted by (class, file name), so that their order never depends on the source."""
    images.sort(key=lambda im: (im.label, im.file))
    by_split = {s: [im for im in images if im.split == s] for s in splits}
    empty = [s for s in splits if not by_split[s]]
    if empty:
        raise DataError(
            f"{name}: the class folders of {' and '.join(empty)} hold no images (files ending "
            f"in {', '.join(sorted(IMAGE_SUFFIXES))}); an image tree is <split>/<class>/<image>"
        )
    classes = same_classes(name, {s: [im.label for im in by_split[s]] for s in splits})
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


def same_classes(name: str, labels: Mapping[str, Sequence[str]]) -> list[str]:
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


def _size(image: TreeImage) -> str:
    return f"{image.pixels.shape[1]}x{image.pixels.shape[0]}"


def _stack(
    images: Sequence[TreeImage], gray: bool, index: Mapping[str, int]
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
