"""Model zoo behind a registry.

Every model is a `Classifier`: it takes uint8 (or float 0..255) images, normalises
them itself with the data set's statistics, and exposes its penultimate features
(`features`) and its last linear layer (`head`), which several pruning methods need.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from benchmarks import compute
from benchmarks.errors import ConfigError
from benchmarks.library_models import check_timm, check_torchvision, timm_body, torchvision_body
from benchmarks.options import check_option_types
from benchmarks.registry import Registry

Body = nn.Module
BodyFactory = Callable[..., tuple[Body, int]]

MODELS: Registry[BodyFactory] = Registry("model")
MODELS.register("timm")(timm_body)
MODELS.register("torchvision")(torchvision_body)
# deeper checks than the option names, for models built by another library
LIBRARY_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "timm": check_timm,
    "torchvision": check_torchvision,
}


# below any spread of 8-bit pixels (one grey level in 1e13 pixels is 4e-10): a constant channel
CONSTANT_STD = 1e-10


class Classifier(nn.Module):
    """Normalisation + feature extractor + linear head.

    A classifier built by `build_model` has a `network` identity and counts the examples
    that go through it (`benchmarks.compute`); one built directly counts nothing.
    """

    network: str | None = None

    def __init__(
        self,
        body: Body,
        feature_dim: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
        channels = len(mean)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        )
        # a constant channel (a blank one; its std is 0 up to rounding) is divided by 1, so it
        # reaches the body as about zero, not as rounding noise over 1e-18 (inf, then NaN)
        std_t = torch.tensor(std, dtype=torch.float32)
        std_t = torch.where(std_t > CONSTANT_STD, std_t, torch.ones_like(std_t))
        self.register_buffer("std", std_t.view(1, channels, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map uint8 pixels to the normalised float input the body sees."""
        return (x.to(self.mean.dtype) / 255.0 - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation [B, feature_dim] of raw images."""
        h = self.body(self.normalize(x))
        if self.network is not None:
            compute.count_forward(self.network, int(x.shape[0]), h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    options: Mapping[str, Any] | None = None,
) -> Classifier:
    """Build a registered model for a data set's channels, image size and classes.

    `options` are the architecture's own knobs (e.g. `width` of `cnn` and `mlp`).
    """
    options = dict(options or {})
    check_model(name, options)
    body, feature_dim = MODELS.get(name)(in_channels, image_size, **options)
    model = Classifier(body, feature_dim, num_classes, mean, std)
    network = compute.network_id(name, options, in_channels, image_size, num_classes)
    compute.measure_flops(network, model, torch.zeros(1, in_channels, *image_size))
    model.network = network
    return model


def check_model(name: str, options: Mapping[str, Any]) -> None:
    """Fail early, naming the choices, on an unknown model or model option or its type."""
    factory = MODELS.get(name)
    allowed = model_option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model '{name}' has no option {', '.join(unknown)}; its options: "
            f"{', '.join(allowed) or '(none)'}"
        )
    check_option_types("model", options, typing.get_type_hints(factory))
    if name in LIBRARY_CHECKS:
        LIBRARY_CHECKS[name](options)


def model_option_names(name: str) -> list[str]:
    """The options a model takes: its factory's parameters but the two every model gets
    from the data (`in_channels`, `image_size`)."""
    parameters = inspect.signature(MODELS.get(name)).parameters
    return [p for p in parameters if p not in ("in_channels", "image_size")]


def model_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture options of a `model` config section (everything but its name),
    as plain containers (they are hashed into score-cache keys and passed to libraries)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return {str(k): v for k, v in dict(plain).items() if k != "name"}


def model_names() -> list[str]:
    return MODELS.names()


@MODELS.register("mlp")
def _mlp(in_channels: int, image_size: tuple[int, int], width: int = 256) -> tuple[Body, int]:
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size[0] * image_size[1], width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
    )
    return body, width


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@MODELS.register("cnn")
def _cnn(in_channels: int, image_size: tuple[int, int], width: int = 32) -> tuple[Body, int]:
    """Two conv stages of two 3x3 convs each (width, then 2 x width channels), max-pool
    after each, global average pool."""
    body = nn.Sequential(
        *_conv_bn_relu(in_channels, width),
        *_conv_bn_relu(width, width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width),
        *_conv_bn_relu(2 * width, 2 * width),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 2 * width


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def _resnet(
    block: type[BasicBlock] | type[Bottleneck], depths: Sequence[int], in_channels: int
) -> tuple[Body, int]:
    """CIFAR-form ResNet: 3x3 stride-1 stem, no max-pool (Data Diet's resnet18_lowres)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
    ]
    cin = 64
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(block(cin, planes, stride))
            cin = planes * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


@MODELS.register("resnet18")
def _resnet18(in_channels: int, image_size: tuple[int, int]) -> tuple[Body, int]:
    return _resnet(BasicBlock, (2, 2, 2, 2), in_channels)


@MODELS.register("resnet50")
def _resnet50(in_channels: int, image_size: tuple[int, int]) -> tuple[Body, int]:
    return _resnet(Bottleneck, (3, 4, 6, 3), in_channels)
