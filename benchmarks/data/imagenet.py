"""ImageNet-1k (train/ and val/ class folders), decoded once at data.resolution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.data.cache import cached
from benchmarks.data.dataset import DataSet, assemble
from benchmarks.data.decode import IMAGE_SUFFIXES, usable_cores
from benchmarks.data.downsampled import IMAGENET_HOME
from benchmarks.data.loading import DATASETS, Source
from benchmarks.errors import ConfigError, DataError

IMAGENET_SPLITS = {"train": "train", "test": "val"}


@DATASETS.register("imagenet")
def _imagenet(source: Source) -> DataSet:
    """ILSVRC-2012 in ImageFolder layout, each image resized (shorter side) and centre-cropped
    to data.resolution, decoded in parallel on every core the process may use."""
    resolution, class_dirs = imagenet_folders(source)
    # The class folders' mtimes change when files are added or removed: a cache hit costs
    # 2,000 stats, not 1.3 million.
    dirs = class_dirs["train"] + class_dirs["test"]
    return cached(
        f"imagenet{resolution}px",
        dirs,
        source,
        lambda: _decode_imagenet(source.name, class_dirs, resolution),
    )


def imagenet_folders(source: Source) -> tuple[int, dict[str, list[Path]]]:
    """data.resolution, checked, and the sorted class folders of each split."""
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
    return resolution, class_dirs


def imagenet_files(
    name: str, class_dirs: Mapping[str, Sequence[Path]]
) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]]]:
    """The class names and each split's image files and labels, in the data set's order
    (class folders sorted, then the files of each sorted)."""
    classes = [d.name for d in class_dirs["train"]]
    if [d.name for d in class_dirs["test"]] != classes:
        raise DataError(f"{name}: train/ and val/ must have the same class folders")
    splits = {}
    for split, dirs in class_dirs.items():
        files, labels = [], []
        for label, d in enumerate(dirs):
            images = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            files += images
            labels += [label] * len(images)
        splits[split] = (files, np.array(labels, dtype=np.int64))
    return classes, splits


def _decode_imagenet(
    name: str, class_dirs: Mapping[str, Sequence[Path]], resolution: int
) -> DataSet:
    classes, splits = imagenet_files(name, class_dirs)
    arrays = {}
    for split, (files, labels) in splits.items():
        x = _decode_parallel(files, resolution, f"{name} {IMAGENET_SPLITS[split]}")
        arrays[split] = (x, labels)
    return assemble(name, arrays["train"], arrays["test"], classes)


def _decode_parallel(files: Sequence[Path], resolution: int, what: str) -> np.ndarray:
    """[N, 3, r, r] uint8, decoded by one process per usable core, with a progress bar."""
    import multiprocessing

    from tqdm import tqdm

    x = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    jobs = [(str(f), resolution) for f in files]
    with (
        multiprocessing.get_context("fork").Pool(usable_cores()) as pool,
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
            return centre_crop(image, r)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot decode image ({err})") from None


def centre_crop(image: Image.Image, r: int) -> np.ndarray:
    """The image's shorter side resized to r (bilinear, antialiased), then its central r x r,
    as uint8 [3, r, r]: the decode of an in-memory ImageNet and of a streamed one alike."""
    image.draft("RGB", (r, r))
    image = image.convert("RGB")
    w, h = image.size
    scale = r / min(w, h)
    size = (max(r, round(w * scale)), max(r, round(h * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - r) / 2), round((size[1] - r) / 2)
    image = image.crop((left, top, left + r, top + r))
    return np.asarray(image).transpose(2, 0, 1)
