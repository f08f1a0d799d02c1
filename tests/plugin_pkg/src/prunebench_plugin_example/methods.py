"""A pruning method from outside prunebench: an image's mean pixel value, to a power."""

from dataclasses import dataclass

import numpy as np

from methods import PruningMethod, ScoreContext, register


@register
@dataclass
class Brightness(PruningMethod):
    name = "brightness"
    summary = "mean pixel value of the image, raised to `power`"
    paper = "none: the example plugin of prunebench's tests"
    direction = "high = bright = kept first"
    power: float = 1.0

    def score_runs(self, ctx: ScoreContext) -> np.ndarray:
        brightness = ctx.train_x.double().mean(dim=(1, 2, 3)) ** self.power
        return brightness.cpu().numpy()[None, :]
