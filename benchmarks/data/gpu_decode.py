"""data.stream.decode=cuda: JPEGs decoded and cropped on the GPU (torchvision.io.decode_jpeg).

The batch's bytes are read on the host (one pread each) and decoded in one batched call on
the device; the crops are the CPU path's (`transforms.crop_box` from the same seeded
generator, the same flips), resized with antialiased bilinear interpolation on the device,
so a batch differs from the CPU-decoded one only by the decoder and the resampling kernel
(tests/test_cuda.py measures how much). `fixed` resizes the shorter side to r and takes the
centre, as the in-memory decode does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.data.transforms import EVAL_RESIZE, crop_box


def decode(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """uint8 [3, H, W] images on `device`, decoded in one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(
        image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _centre(image: torch.Tensor, short: int, r: int) -> torch.Tensor:
    """Shorter side resized to `short` (the longer truncated, as torchvision), centre r x r."""
    h, w = int(image.shape[1]), int(image.shape[2])
    size = (int(short * h / w), short) if w <= h else (short, int(short * w / h))
    resized = _resize(image, size)
    top, left = round((size[0] - r) / 2.0), round((size[1] - r) / 2.0)
    return resized[:, top : top + r, left : left + r]


def train_views(
    datas: Sequence[bytes],
    transform: str,
    r: int,
    seed: int,
    device: torch.device,
    first: int = 0,
) -> torch.Tensor:
    """The batch's training views [B, 3, r, r] on `device`; image k's crop is seeded by
    (seed, first + k), its row in the global batch, as on the CPU."""
    out = torch.empty((len(datas), 3, r, r), dtype=torch.uint8, device=device)
    for k, image in enumerate(decode(datas, device)):
        if transform == "fixed":
            out[k] = _centre(image, r, r)
            continue
        rng = np.random.default_rng((seed, first + k))
        left, top, w, h = crop_box(int(image.shape[2]), int(image.shape[1]), rng)
        view = _resize(image[:, top : top + h, left : left + w], (r, r))
        out[k] = view.flip(-1) if rng.random() < 0.5 else view
    return out


def eval_views(
    datas: Sequence[bytes], transform: str, r: int, device: torch.device
) -> torch.Tensor:
    """The batch's evaluation views [B, 3, r, r] on `device`."""
    short = r if transform == "fixed" else int(r * EVAL_RESIZE)
    out = torch.empty((len(datas), 3, r, r), dtype=torch.uint8, device=device)
    for k, image in enumerate(decode(datas, device)):
        out[k] = _centre(image, short, r)
    return out
