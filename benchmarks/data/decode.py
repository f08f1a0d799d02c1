"""Image bytes to pixels, in parallel on every usable core."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
GRAY_MODES = frozenset({"1", "L", "LA"})


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Pixels as [H, W] for grayscale images, [H, W, 3] for any other."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: cannot decode image ({err})") from None


# files whose bytes are read ahead of the decoding processes (a few MB of compressed images)
DECODE_BLOCK = 4096


def decode_same_size(
    reads: Sequence[Callable[[], bytes]], wheres: Sequence[str], what: str
) -> np.ndarray:
    """[N, 3, H, W] uint8 (grey images as RGB), all one size: this process reads the files'
    bytes DECODE_BLOCK at a time and one process per usable core decodes them straight into
    the preallocated array, so that the peak is that array plus one block of files."""
    import multiprocessing

    from tqdm import tqdm

    x = None
    with (
        multiprocessing.get_context("fork").Pool(usable_cores()) as pool,
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
    pixels = decode_image(*job)
    return (pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, 2)).transpose(2, 0, 1)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
