"""A data set from outside prunebench: 8x8 horizontal (class 0) or vertical (1) stripes."""

import torch

from benchmarks.data import DATASETS, DataSet, Source, channel_stats, fingerprint


def _stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    rows = (torch.arange(8) % 2).view(1, 8, 1).expand(n, 8, 8)
    stripes = torch.where(y.view(n, 1, 1) == 0, rows, rows.transpose(1, 2))
    noise = torch.randint(0, 120, (n, 8, 8), generator=gen)
    x = (stripes * 135 + noise).to(torch.uint8).unsqueeze(1).contiguous()
    return x, y


@DATASETS.register("stripes")
def stripes(source: Source) -> DataSet:
    train_x, train_y = _stripes(300, seed=0)
    test_x, test_y = _stripes(100, seed=1)
    mean, std = channel_stats(train_x)
    return DataSet(
        name="stripes",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        classes=("horizontal", "vertical"),
        mean=mean,
        std=std,
        fingerprint=fingerprint(train_x, train_y, test_x, test_y),
    )
