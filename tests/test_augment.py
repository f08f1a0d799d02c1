"""Batched crop/flip against per-image references and their distributions."""

import torch
import torch.nn.functional as F

from benchmarks.augment import Augment, random_crop, random_flip


def _images(b=64, c=3, h=8, w=8):
    return torch.randint(
        0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_shapes_and_dtype_are_kept():
    x = _images()
    out = Augment(4, True)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_same_generator_seed_gives_the_same_batch():
    x = _images()
    a = Augment(4, True)(x, torch.Generator().manual_seed(5))
    b = Augment(4, True)(x, torch.Generator().manual_seed(5))
    c = Augment(4, True)(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_each_crop_is_a_window_of_the_zero_padded_image():
    x = _images(b=32)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(x.shape[0]):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_crop_offsets_are_uniform():
    x = torch.zeros(20000, 1, 1, 1, dtype=torch.uint8) + 1
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    # a 1x1 image padded by 1 gives 9 windows; exactly 1 of them (the centre) keeps the pixel
    assert abs(out.float().mean().item() - 1 / 9) < 0.01


def test_flip_mirrors_about_half_of_the_images():
    x = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).repeat(4000, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == x).all(dim=(1, 2, 3))
    assert bool((flipped ^ kept).all())
    assert abs(flipped.float().mean().item() - 0.5) < 0.03


def test_inactive_augmentation_is_identity():
    x = _images()
    aug = Augment(0, False)
    assert not aug.active
    assert torch.equal(aug(x, torch.Generator()), x)
