"""Batched augmentation on the run's device: no PIL, no per-image Python work."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Augment:
    """Random pad-and-crop plus horizontal flip, applied to a whole batch at once.

    Padding is with zeros (as torchvision's RandomCrop(padding=p)); every example gets
    its own crop offset and flip, drawn from the caller's generator so that the
    augmentation stream is seeded independently of model initialisation. `rows=(start,
    total)` augments rows start.. of a batch of `total` (one rank's slice of a global
    batch): the draws are those of the whole batch, so that each example gets what it
    gets on one device.
    """

    def __init__(self, crop_padding: int = 0, flip: bool = False) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding={crop_padding} must be >= 0")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator, rows)
        if self.flip:
            x = random_flip(x, generator, rows)
        return x

    def describe(self) -> dict[str, object]:
        return {"crop_padding": self.crop_padding, "flip": self.flip}


def random_crop(
    x: torch.Tensor,
    padding: int,
    generator: torch.Generator,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    start, total = rows or (0, b)
    dy = torch.randint(0, 2 * padding + 1, (total,), generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * padding + 1, (total,), generator=generator, device=generator.device)
    dy, dx = dy[start : start + b].to(x.device), dx[start : start + b].to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(
    x: torch.Tensor, generator: torch.Generator, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    start, total = rows or (0, x.shape[0])
    flip = torch.rand(total, generator=generator, device=generator.device) < 0.5
    flip = flip[start : start + x.shape[0]].to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)
