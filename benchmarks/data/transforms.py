"""The image transforms of streamed data, on the CPU: encoded bytes in, uint8 [3, r, r] out.

`fixed`: the in-memory decode (shorter side resized to r, centre crop), so that a streamed
run sees the tensors an in-memory one holds. `crop`, the ImageNet papers' protocol
(torchvision's reference recipe): RandomResizedCrop(r, scale (0.08, 1), ratio (3/4, 4/3))
+ horizontal flip for training, Resize(r * 256 / 224) + CenterCrop(r) for evaluation.

JPEGs are decoded at the smallest DCT scale that still gives the crop at least r pixels a
side (PIL's draft), which is what makes the decode fast; torchvision decodes at full size.
The crop parameters follow torchvision's RandomResizedCrop.get_params, drawn from a numpy
generator seeded per example, so that a batch is the same whatever the worker count.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from benchmarks.data.imagenet import centre_crop
from benchmarks.errors import DataError

TRANSFORMS = ("fixed", "crop")
EVAL_RESIZE = 256 / 224
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def train_pixels(data: bytes, transform: str, r: int, seed: tuple[int, int]) -> np.ndarray:
    """The training view of one encoded image (`fixed`: no randomness; the batched
    augmentation on the device follows)."""
    with _open(data) as image:
        if transform == "fixed":
            return centre_crop(image, r)
        rng = np.random.default_rng(seed)
        pixels = random_resized_crop(image, r, rng)
        return pixels[:, :, ::-1].copy() if rng.random() < 0.5 else pixels


def eval_pixels(data: bytes, transform: str, r: int) -> np.ndarray:
    """The evaluation view of one encoded image."""
    with _open(data) as image:
        if transform == "fixed":
            return centre_crop(image, r)
        return resize_centre_crop(image, int(r * EVAL_RESIZE), r)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"a packed image cannot be decoded ({err})") from None


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) as torchvision's RandomResizedCrop.get_params draws them."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(image: Image.Image, r: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of the image resized to r x r (bilinear, antialiased), [3, r, r]."""
    width, height = image.size
    left, top, w, h = crop_box(width, height, rng)
    image.draft("RGB", (math.ceil(width * r / w), math.ceil(height * r / h)))
    image = image.convert("RGB")
    sx, sy = image.size[0] / width, image.size[1] / height
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    out = image.resize((r, r), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out).transpose(2, 0, 1)


def resize_centre_crop(image: Image.Image, size: int, r: int) -> np.ndarray:
    """torchvision's Resize(size) (shorter side, the longer truncated) + CenterCrop(r)."""
    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    image.draft("RGB", new)
    image = image.convert("RGB").resize(new, Image.Resampling.BILINEAR)
    left, top = round((new[0] - r) / 2.0), round((new[1] - r) / 2.0)
    return np.asarray(image.crop((left, top, left + r, top + r))).transpose(2, 0, 1)
