"""A method and a model that the entry points name by their class and factory: neither is
decorated, each is registered under its entry point's name (`spread`, `wide`)."""

from dataclasses import dataclass

import numpy as np
from torch import nn

from methods import PruningMethod, ScoreContext


@dataclass
class Spread(PruningMethod):
    summary = "standard deviation of the image's pixel values"
    paper = "none: the example plugin of prunebench's tests"
    direction = "high = spread out = kept first"

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.train_x.double().flatten(1).std(dim=1).cpu().numpy()[None, :]


def wide(in_channels: int, image_size: tuple[int, int], width: int = 64) -> tuple[nn.Module, int]:
    inputs = in_channels * image_size[0] * image_size[1]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU()), width
