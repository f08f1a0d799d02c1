"""timm and torchvision models behind the registry: shapes, weights, errors."""

import builtins

import pytest
import torch
from test_run import records, run_cli
from torch import nn

from benchmarks.errors import ConfigError
from benchmarks.models import build_model, check_model

TINY_VIT = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 2, "depth": 2}}
TINY_CONVNEXT = {
    "arch": "convnext_atto",
    "kwargs": {"patch_size": 1, "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]},
}


def build(name, options, channels=1, size=(8, 8), classes=7):
    return build_model(
        name, channels, classes, size, (0.5,) * channels, (0.25,) * channels, options
    )


@pytest.mark.parametrize(
    ("name", "options", "channels", "width"),
    [
        ("timm", TINY_VIT, 1, 192),
        ("timm", TINY_CONVNEXT, 3, 64),
        ("timm", {"arch": "resnet18"}, 1, 512),
        ("torchvision", {"arch": "resnet18"}, 1, 512),
        ("torchvision", {"arch": "mobilenet_v3_small"}, 3, 1024),
    ],
)
def test_features_are_pooled_and_the_head_is_the_only_classifier(name, options, channels, width):
    model = build(name, options, channels).eval()
    x = torch.randint(0, 256, (3, channels, 8, 8), dtype=torch.uint8)
    feats = model.features(x)
    assert feats.shape == (3, width) and model.head.in_features == width
    assert torch.equal(model.head(feats), model(x))
    assert model(x).shape == (3, 7)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 7]
    assert linears == [model.head]


def test_timm_vit_takes_the_image_size_and_the_data_channels():
    model = build("timm", TINY_VIT, channels=1, size=(8, 8))
    assert model.body.patch_embed.proj.in_channels == 1
    assert model.body.pos_embed.shape == (1, 16 + 1, 192)  # (8 / 2)^2 patches + class token
    assert len(model.body.blocks) == 2


def test_torchvision_vit_takes_the_image_size():
    options = {"arch": "vit_b_16", "kwargs": {"num_classes": 5}}
    model = build("torchvision", options, channels=3, size=(32, 32))
    assert model.body.encoder.pos_embedding.shape == (1, 2 * 2 + 1, 768)


def test_input_normalisation_is_the_classifiers():
    model = build("timm", {"arch": "resnet18"}, channels=1)
    x = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(model.normalize(x), torch.full((1, 1, 8, 8), 2.0))


def test_a_local_weights_file_is_loaded(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    model = build("timm", {"arch": "resnet18", "weights": str(tmp_path / "timm.pth")}, channels=3)
    assert torch.equal(model.body.conv1.weight, source.conv1.weight)

    from torchvision import models

    tv = models.get_model("resnet18")
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    grey = build("torchvision", {"arch": "resnet18", "weights": str(tmp_path / "tv.pth")})
    # grey input: the RGB filters summed, so a grey image gives the RGB model's response
    assert torch.allclose(grey.body.conv1.weight, tv.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.body.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert isinstance(grey.body.fc, nn.Identity)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("timm", {"arch": "vit_tiniest"}, "model.arch='vit_tiniest' is not a timm model"),
        ("torchvision", {"arch": "vgg0"}, "model.arch='vgg0' is not a torchvision"),
        ("timm", {"arch": "resnet18", "weights": "/nonexistent.pth"}, "is not a file"),
        ("timm", {"arch": "resnet18", "pretrained": True, "weights": __file__}, "not both"),
        ("timm", {"arch": "resnet18", "size": 3}, "has no option size"),
    ],
)
def test_bad_options_are_named_before_any_work(name, options, message):
    with pytest.raises(ConfigError, match=message):
        check_model(name, options)


def test_bad_kwargs_and_sizes_are_named():
    with pytest.raises(ConfigError, match="unexpected keyword argument 'depth'"):
        build("timm", {"arch": "resnet18", "kwargs": {"depth": 3}})
    with pytest.raises(ConfigError, match="does not run on 1x8x8 images"):
        build("timm", {"arch": "convnext_atto"})
    with pytest.raises(ConfigError, match="no Linear classifier"):
        build("torchvision", {"arch": "squeezenet1_0"}, channels=3, size=(32, 32))


@pytest.mark.parametrize(
    ("name", "arch", "kwarg", "value", "alternative"),
    [
        ("torchvision", "vit_b_16", "patch_size", 2, "model.arch=VisionTransformer"),
        ("timm", "mixer_s16_224", "patch_size", 2, "timm.list_models('mixer*')"),
        ("timm", "poolformer_s12", "depths", [1, 1, 1, 1], "timm.list_models('poolformer*')"),
        ("timm", "efficientnet_b0", "channel_multiplier", 0.5, "list_models('efficientnet*')"),
    ],
)
def test_a_kwarg_the_architecture_fixes_is_named_with_the_architecture(
    name, arch, kwarg, value, alternative
):
    with pytest.raises(ConfigError) as err:
        build(name, {"arch": arch, "kwargs": {kwarg: value}}, channels=3, size=(32, 32))
    message = str(err.value)
    assert message.startswith(f"model.kwargs.{kwarg}: the architecture {arch} fixes {kwarg}")
    assert alternative in message and "multiple values" not in message


def test_torchvision_model_classes_take_their_own_sizes(tmp_path):
    sizes = {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}
    model = build("torchvision", {"arch": "VisionTransformer", "kwargs": sizes}).eval()
    assert model.body.conv_proj.in_channels == 1 and len(model.body.encoder.layers) == 1
    assert model.body.encoder.pos_embedding.shape == (1, (8 // 4) ** 2 + 1, 8)
    assert model.head.in_features == 8
    assert model(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)).shape == (2, 7)
    with pytest.raises(ConfigError, match="VisionTransformer is torchvision's class"):
        check_model("torchvision", {"arch": "VisionTransformer", "pretrained": True})
    kwargs = ",".join(f"{k}:{v}" for k, v in sizes.items())
    proc = run_cli(
        tmp_path,
        "model=torchvision",
        "model.arch=VisionTransformer",
        f"model.kwargs={{{kwargs}}}",
        "train.epochs=1",
        "data.max_train=200",
        "data.max_test=100",
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "finished" and rec["config"]["model"]["arch"] == "VisionTransformer"


def test_the_timm_hint_lists_the_family_of_the_name_given():
    with pytest.raises(ConfigError) as err:
        check_model("timm", {"arch": "resnet5"})
    assert "resnet50" in str(err.value) and "list_models('resnet*')" in str(err.value)
    assert "vit" not in str(err.value)


def test_without_timm_one_line_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ConfigError, match=r"pip install 'prunebench\[timm\]'"):
        check_model("timm", {"arch": "resnet18"})


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "model=timm",
            "model.arch=vit_tiny_patch16_224",
            "model.kwargs={patch_size:2,depth:1,embed_dim:32,num_heads:2}",
        ],
        ["model=torchvision", "model.arch=mobilenet_v3_small"],
    ],
)
def test_exact_grand_runs_end_to_end_on_digits(tmp_path, overrides):
    proc = run_cli(
        tmp_path,
        *overrides,
        "method=grand",
        "method.epoch=1",
        "method.runs=1",
        "train.epochs=1",
        "data.max_train=200",
        "data.max_test=100",
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "finished" and rec["cell"]["model"] == overrides[0].split("=")[1]
    assert rec["config"]["method"]["params"] == "all"
    assert rec["selection"]["kept"] == 100
