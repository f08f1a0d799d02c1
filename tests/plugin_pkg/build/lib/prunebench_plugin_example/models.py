"""A model from outside prunebench: one hidden layer; without a yaml its defaults are its config."""

from torch import nn

from benchmarks.models import MODELS


@MODELS.register("tiny")
def tiny(in_channels: int, image_size: tuple[int, int], width: int = 32) -> tuple[nn.Module, int]:
    inputs = in_channels * image_size[0] * image_size[1]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU()), width
