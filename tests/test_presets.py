"""Every study preset composes, and every method its sweep names exists."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image
from test_data_peers import write_tiny_zip

from benchmarks.data import DATASETS
from benchmarks.models import MODELS
from benchmarks.pipeline import run
from methods.core.registry import method_names

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides, hydra_config=True):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_every_method_of_its_sweep(preset):
    cfg = _compose([f"experiment={preset}"])
    assert cfg.data.name in DATASETS and cfg.model.name in MODELS
    sweep = cfg.hydra.sweeper.params
    for method in str(sweep.get("method") or cfg.method.name).split(","):
        cell = _compose([f"experiment={preset}", f"method={method}"])
        assert cell.method.name in method_names(), (preset, method)
    fractions = [
        float(f) for f in str(sweep.get("prune.fraction") or cfg.prune.fraction).split(",")
    ]
    assert all(0 <= f < 1 for f in fractions)
    assert cfg.results.dir.endswith(preset)


# the paper presets at toy scale: digits, a small CNN, 2 epochs; every protocol key of the
# preset (strategy, budget, schedule, method options) is kept
PAPER_PRESETS = {
    "deepcore_cifar10": ["method=herding", "score.proxy_epochs=2"],
    "ccs_cifar10": ["score.proxy_epochs=2"],
    "moderate_cifar100": [],
    "tdds_cifar100": ["method.horizon=3", "method.window=3", "train.epochs=3"],
    "d2_cifar10": ["score.proxy_epochs=2"],
    "infobatch_cifar100": [],
    "rs2_cifar10": ["prune.fraction=0.9"],
}
TOY = ["data=digits", "model=cnn", "train.epochs=2", "train.batch_size=64", "device=cpu"]


def test_every_paper_preset_is_exercised_here():
    assert set(PAPER_PRESETS) | set(DATA_PRESETS) <= set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PAPER_PRESETS))
def test_paper_preset_runs_at_toy_scale(preset, tmp_path):
    base = _compose([f"experiment={preset}"])
    sweep = base.hydra.sweeper.params
    fraction = str(sweep["prune.fraction"]).split(",")[0]
    overrides = [
        f"experiment={preset}",
        f"prune.fraction={fraction}",
        *TOY,
        *PAPER_PRESETS[preset],
        f"results.dir={tmp_path / 'results'}",
        f"cache.dir={tmp_path / 'cache'}",
        "run.checkpoint_steps=0",
    ]
    cfg = _compose(overrides, hydra_config=False)
    for key in ("budget", "schedule", "nesterov", "label_smoothing"):
        assert cfg.train[key] == base.train[key], key
    assert cfg.prune.strategy == base.prune.strategy
    record = run(cfg, progress=False)
    assert record["status"] == "finished"
    assert record["cell"]["budget"] == base.train.budget
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0
    if preset == "tdds_cifar100":  # the official subset training: batch-mean score scaling
        assert record["selection"]["weights_batch_mean_scale"] is True


def write_imagenet_folder(root: Path, per_class: int = 10) -> None:
    """ILSVRC-2012's train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, two classes of solid images."""
    for split, count in (("train", per_class), ("val", 2)):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                value = 120 * c + 5 * i
                Image.new("RGB", (24, 20), (value, 255 - value, value // 2)).save(
                    folder / f"{wnid}_{i}.JPEG", "JPEG"
                )


# the presets of the peers' data sets on tiny files in their official formats, with the
# preset's own model (narrowed where the family allows), one epoch
DATA_PRESETS = {
    "moderate_tiny_imagenet": (
        lambda root: write_tiny_zip(root / "tiny-imagenet-200.zip"),
        # 80% removed keeps 1 of the 6 toy images: fewer than its 3 classes, a toy's opt-in
        ["model.kwargs={width_per_group:4}", "data.allow_missing_classes=true"],
    ),
    # at the preset's 224 px, streamed (issue 22's Done when)
    "ccs_imagenet": (write_imagenet_folder, ["score.proxy_epochs=1", "data.stream.workers=1"]),
    "dyn_unc_imagenet": (
        write_imagenet_folder,
        [
            "data.resolution=16",
            "data.stream.workers=0",
            "model.kwargs={width_per_group:4}",
            "score.proxy_epochs=2",
            "method.window=2",
        ],
    ),
}


@pytest.mark.parametrize("preset", sorted(DATA_PRESETS))
def test_data_preset_runs_on_tiny_files_in_the_official_format(preset, tmp_path):
    write_files, options = DATA_PRESETS[preset]
    write_files(tmp_path / "data")
    base = _compose([f"experiment={preset}"])
    # the preset's lightest rate: at its heaviest (ccs_imagenet: 2 of the 20 toy images kept)
    # the full-width ResNet-34 at lr 0.1 diverges within 5 steps, with 2 threads
    fraction = str(base.hydra.sweeper.params["prune.fraction"]).split(",")[-1]
    overrides = [
        f"experiment={preset}",
        f"prune.fraction={fraction}",
        "train.epochs=1",
        "train.batch_size=4",
        "device=cpu",
        *options,
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        f"results.dir={tmp_path / 'results'}",
        f"cache.dir={tmp_path / 'cache'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "run.checkpoint_steps=0",
    ]
    cfg = _compose(overrides, hydra_config=False)
    assert cfg.model.arch == base.model.arch and cfg.data.name == base.data.name
    for key in ("budget", "schedule", "nesterov", "weight_decay", "momentum", "lr"):
        assert cfg.train[key] == base.train[key], key
    assert cfg.prune.strategy == base.prune.strategy
    record = run(cfg, progress=False)
    assert record["status"] == "finished"
    assert record["cell"]["budget"] == base.train.budget
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0
    streamed = base.data.get("storage") == "stream"
    assert record["data"]["storage"]["mode"] == ("stream" if streamed else "memory")
