"""A small synthetic training set in a ScoreContext: images whose label is 'bright or not'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.augment import Augment
from benchmarks.cache import ScoreCache
from methods.core.base import ScoreContext


def synthetic_ctx(
    cache_dir: Path | None = None,
    n: int = 64,
    seed: int = 0,
    model: str = "mlp",
    model_options: dict[str, Any] | None = None,
    epochs: int = 4,
    size: int = 6,
) -> ScoreContext:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long()
    return ScoreContext(
        train_x=x,
        train_y=y,
        num_classes=2,
        mean=(0.5,),
        std=(0.29,),
        device=torch.device("cpu"),
        seed=seed,
        data_fingerprint="synthetic",
        augment=Augment(1, True),
        model_name=model,
        model_options=dict(model_options or {}),
        train_cfg={"epochs": epochs, "batch_size": 16, "lr": 0.05},
        cache=ScoreCache(cache_dir) if cache_dir else None,
    )
