"""timm and torchvision models as prunebench bodies: built for the data set's channels,
image size and classes, their own classifier removed (prunebench's `Classifier` adds
the head), so that `features` is the pooled penultimate output as for every model.

No weights are downloaded unless asked: `pretrained=True` uses the library's own
mechanism (online), `weights=<file>` loads a local file (offline).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.errors import ConfigError
from benchmarks.state_files import read_state_strictly

INSTALL_TIMM = "model=timm needs the timm package: pip install 'prunebench[timm]'"
# Python's own words when a builder sets an argument that the user passes too
FIXED_KWARG = re.compile(r"got multiple values for keyword argument '(\w+)'")


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(INSTALL_TIMM) from None
    return timm


def _check_weights(backend: str, pretrained: bool, weights: str | None) -> None:
    if pretrained and weights:
        raise ConfigError(
            f"model={backend}: give model.pretrained=true (the library's download) or "
            f"model.weights=<file> (a local file), not both"
        )
    if weights and not Path(weights).expanduser().is_file():
        raise ConfigError(f"model.weights={weights!r} is not a file")


def check_timm(options: Mapping[str, Any]) -> None:
    """Fail before any work on a missing timm, an unknown architecture or weights file."""
    timm = _timm()
    arch = options.get("arch")
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=5, cutoff=0.6)
        nearest = f"close names: {', '.join(close)}; " if close else ""
        raise ConfigError(
            f"model.arch={arch!r} is not a timm model; {nearest}list the family with "
            f"python -c \"import timm; print(timm.list_models('{_family(str(arch))}'))\""
        )
    _check_weights("timm", bool(options.get("pretrained")), options.get("weights"))


def _family(arch: str) -> str:
    """timm's listing pattern for the family a name starts with (vit_tiniest: vit*)."""
    match = re.match(r"[A-Za-z]+", arch)
    return f"{match.group(0).lower()}*" if match else "*"


def _torchvision_classes() -> dict[str, type[nn.Module]]:
    """The model classes torchvision.models exports (VisionTransformer, SwinTransformer,
    ...), which take the architecture's own sizes that its named builders fix."""
    from torchvision import models

    return {
        name: value
        for name, value in vars(models).items()
        if isinstance(value, type) and issubclass(value, nn.Module)
    }


def check_torchvision(options: Mapping[str, Any]) -> None:
    from torchvision import models

    arch = options.get("arch")
    classes = _torchvision_classes()
    if arch not in models.list_models(module=models) and arch not in classes:
        raise ConfigError(
            f"model.arch={arch!r} is not a torchvision classification model; available: "
            f"{', '.join(models.list_models(module=models))}; or a model class with its own "
            f"arguments in model.kwargs: {', '.join(classes)}"
        )
    if arch in classes and options.get("pretrained"):
        raise ConfigError(
            f"model.arch={arch} is torchvision's class, built with the sizes in model.kwargs: "
            "it has no pretrained weights; name a builder (e.g. vit_b_16) or give "
            "model.weights=<file>"
        )
    _check_weights("torchvision", bool(options.get("pretrained")), options.get("weights"))


def _create(
    builder: Callable[..., nn.Module],
    arch: str,
    size_key: str,
    size: Any,
    kwargs: dict,
    alternative: str = "",
) -> nn.Module:
    """Build with the data's image size where the family takes one (ViTs), else without.

    `alternative`: how to set what the named architecture fixes, said when a kwarg is one.
    """
    if size_key not in kwargs:
        try:
            return builder(arch, **{size_key: size}, **kwargs)
        except TypeError as err:
            if f"'{size_key}'" not in str(err):
                raise _build_error(arch, err, alternative) from None
    try:
        return builder(arch, **kwargs)
    except TypeError as err:
        raise _build_error(arch, err, alternative) from None


def _build_error(arch: str, err: TypeError, alternative: str) -> ConfigError:
    fixed = FIXED_KWARG.search(str(err))
    if fixed is None:
        return ConfigError(f"model.arch={arch}: {err}")
    name = fixed.group(1)
    return ConfigError(
        f"model.kwargs.{name}: the architecture {arch} fixes {name} itself (it is part of "
        f"what {arch} is); leave it out{alternative}"
    )


def _feature_dim(body: nn.Module, in_channels: int, image_size: tuple[int, int], arch: str) -> int:
    """The body's pooled output width, from one dry forward (which also proves the
    architecture works at this image size)."""
    training = body.training
    body.eval()
    try:
        with torch.no_grad():
            out = body(torch.zeros(1, in_channels, *image_size))
    except RuntimeError as err:
        raise ConfigError(
            f"model.arch={arch} does not run on {in_channels}x{image_size[0]}x{image_size[1]} "
            f"images ({str(err).splitlines()[0]}); choose kwargs for this size "
            "(patch_size, depths, ...)"
        ) from None
    finally:
        body.train(training)
    if out.dim() != 2:
        raise ConfigError(
            f"model.arch={arch} gives features of shape {list(out.shape)}, not pooled [B, D]"
        )
    return int(out.shape[1])


def timm_body(
    in_channels: int,
    image_size: tuple[int, int],
    arch: str,
    pretrained: bool = False,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """`timm.create_model(arch, num_classes=0, in_chans=..., img_size=...)`: pooled features."""
    timm = _timm()
    options = {"num_classes": 0, "in_chans": in_channels, **dict(kwargs or {})}
    if weights:
        options["pretrained_cfg_overlay"] = {"file": str(Path(weights).expanduser())}
    options["pretrained"] = bool(pretrained or weights)
    family = f", or choose a variant that sets it: timm.list_models('{_family(arch)}')"
    body = _create(timm.create_model, arch, "img_size", tuple(image_size), options, family)
    return body, _feature_dim(body, in_channels, image_size, arch)


def torchvision_body(
    in_channels: int,
    image_size: tuple[int, int],
    arch: str,
    pretrained: bool = False,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """`torchvision.models.get_model(arch)`, or the model class `arch` names
    (VisionTransformer, ...) built from `kwargs`, with its first convolution taking the
    data's channels and its last Linear (the classifier) removed."""
    from torchvision import models

    # torchvision's ViTs take one side of a square image
    size = image_size[0] if image_size[0] == image_size[1] else tuple(image_size)
    classes = _torchvision_classes()
    if arch in classes:
        build = lambda _, **options: classes[arch](**options)  # noqa: E731
        body = _create(build, arch, "image_size", size, dict(kwargs or {}))
    else:
        options = {"weights": "DEFAULT" if pretrained else None, **dict(kwargs or {})}
        built = inspect.signature(models.get_model_builder(arch)).return_annotation
        own = f", or build model.arch={built.__name__} with its own arguments in model.kwargs"
        alternative = own if getattr(built, "__name__", None) in classes else ""
        body = _create(models.get_model, arch, "image_size", size, options, alternative)
    if weights:
        body.load_state_dict(_weights_file(weights))
    _adapt_input_channels(body, in_channels, arch, trained=bool(pretrained or weights))
    linears = [name for name, m in body.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"model.arch={arch} has no Linear classifier to replace by the head")
    _replace(body, linears[-1], nn.Identity())
    return body, _feature_dim(body, in_channels, image_size, arch)


def _weights_file(weights: str) -> Mapping[str, torch.Tensor]:
    """model.weights: a state dict read without running code (a hostile file is refused)."""
    state = read_state_strictly(Path(weights).expanduser(), f"model.weights={weights}")
    if not isinstance(state, Mapping):
        raise ConfigError(
            f"model.weights={weights}: holds a {type(state).__name__}, not a state dict"
        )
    return state


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def _adapt_input_channels(model: nn.Module, in_channels: int, arch: str, trained: bool) -> None:
    """The first convolution rebuilt for `in_channels`; trained RGB filters are summed
    (grey input) or cycled and rescaled, as timm adapts its input layers."""
    if in_channels == 3:
        return
    name, conv = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None)
    )
    if conv is None or conv.in_channels != 3:
        raise ConfigError(f"model.arch={arch} has no 3-channel input convolution to adapt")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    if not trained:
        _replace(model, name, new)
        return
    with torch.no_grad():
        rgb = conv.weight
        if in_channels == 1:
            new.weight.copy_(rgb.sum(dim=1, keepdim=True))
        else:
            cycled = rgb.repeat(1, -(-in_channels // 3), 1, 1)[:, :in_channels]
            new.weight.copy_(cycled * (3 / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(model, name, new)
