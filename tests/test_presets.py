"""Every study preset composes, and every method its sweep names exists."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from benchmarks.data import DATASETS
from benchmarks.models import MODELS
from methods.registry import method_names

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


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
