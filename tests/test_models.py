"""Model zoo: shapes for every data set geometry, and the known CIFAR ResNet sizes."""

import re

import pytest
import torch

from benchmarks.errors import ConfigError
from benchmarks.models import build_model, model_names

GEOMETRIES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32))]


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("channels,size", GEOMETRIES)
def test_logits_and_features_have_the_right_shapes(name, channels, size):
    model = build_model(name, channels, 7, size, (0.5,) * channels, (0.25,) * channels).eval()
    x = torch.randint(0, 256, (3, channels, *size), dtype=torch.uint8)
    feats = model.features(x)
    assert feats.shape == (3, model.head.in_features)
    assert model(x).shape == (3, 7)
    assert torch.allclose(model.head(feats), model(x))


def test_resnet50_shapes():
    model = build_model("resnet50", 3, 100, (32, 32), (0.5,) * 3, (0.25,) * 3).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert model.features(x).shape == (2, 2048)
    assert model(x).shape == (2, 100)


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_173_962), ("resnet50", 23_520_842)])
def test_cifar_resnets_have_the_published_parameter_counts(name, params):
    # the CIFAR-10 ResNet-18/50 with 3x3 stem and no max-pool (e.g. kuangliu/pytorch-cifar)
    model = build_model(name, 3, 10, (32, 32), (0.5,) * 3, (0.25,) * 3)
    assert sum(p.numel() for p in model.parameters()) == params


def test_cifar_resnet_stem_is_3x3_stride_1_without_max_pool():
    model = build_model("resnet18", 3, 10, (32, 32), (0.5,) * 3, (0.25,) * 3)
    stem = model.body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_normalisation_uses_the_data_set_statistics():
    model = build_model("mlp", 1, 2, (2, 2), (0.5,), (0.25,))
    x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(model.normalize(x), torch.full((1, 1, 2, 2), 2.0))


def test_unknown_model_names_the_value_and_the_choices():
    names = model_names()  # the built-ins and any installed plugin package's models
    assert {"cnn", "mlp", "resnet18", "resnet50", "timm", "torchvision"} <= set(names)
    with pytest.raises(
        ConfigError, match=re.escape(f"unknown model 'vgg'; available: {', '.join(names)}")
    ):
        build_model("vgg", 3, 10, (32, 32), (0.5,) * 3, (0.25,) * 3)
