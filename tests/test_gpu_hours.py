"""The images trained by the 224-px ImageNet presets, as docs/streaming.md states them
(its GPU-hours table), follow from the presets' own schedules and the trainer's batch order."""

import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from benchmarks.train import TrainSettings, batch_order, budget_steps
from methods.core.select import kept_count

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_TRAIN = 1_281_167


def trained_images(n: int, steps: int, batch: int) -> int:
    """The doc's formula: q x n + r x b, q, r = divmod(S, ceil(n / b))."""
    q, r = divmod(steps, math.ceil(n / batch))
    return q * n + r * batch


@pytest.mark.parametrize(("n", "steps", "batch"), [(37, 23, 8), (64, 20, 16), (50, 13, 7)])
def test_the_formula_counts_the_trainers_batches(n, steps, batch):
    batches = batch_order(n, steps, batch, order_seed=0, device=torch.device("cpu"))
    assert trained_images(n, steps, batch) == sum(int(idx.numel()) for _, idx in batches)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def preset_images(preset: str) -> int:
    """The proxy training on all data where a method of the sweep reads one (once: the
    grid's cells share the proxy seed), then every cell's training on what it keeps."""
    cfg = _compose(f"experiment={preset}")
    sweep = cfg.hydra.sweeper.params
    methods = str(sweep.get("method") or cfg.method.name).split(",")
    fractions = [float(f) for f in str(sweep.get("prune.fraction")).split(",")]
    seeds = str(sweep.get("seed")).split(",")
    settings = TrainSettings.from_config(cfg.train)
    n = IMAGENET_TRAIN
    total = 0
    proxies = [
        m for m in methods if "proxy" in _compose(f"experiment={preset}", f"method={m}").method
    ]
    if proxies:
        assert isinstance(cfg.score.proxy_seed, int)  # one proxy training for the grid
        proxy = TrainSettings.from_config({**cfg.train, "epochs": cfg.score.proxy_epochs})
        total += trained_images(n, budget_steps(n, n, proxy), proxy.batch_size)
    for method in methods:
        for fraction in fractions:
            kept = n if method == "full" else kept_count(n, fraction)
            steps = budget_steps(kept, n, settings)
            total += len(seeds) * trained_images(kept, steps, settings.batch_size)
    return total


@pytest.mark.parametrize("preset", ["ccs_imagenet", "dyn_unc_imagenet"])
def test_the_docs_table_states_the_presets_trained_images(preset):
    rows = (ROOT / "docs" / "streaming.md").read_text().splitlines()
    (row,) = [r for r in rows if r.startswith(f"| `{preset}` |")]
    stated = int(re.sub(r"[^\d]", "", row.split("|")[2]))
    assert stated == preset_images(preset)
