"""The grand method: exact norms of each proxy run's network, averaged, kept hardest first.

The engine itself (methods.core.grad_norms) is tested layer by layer in test_grad_norms.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_ctx
from torch import nn

from benchmarks.errors import ConfigError
from benchmarks.models import MODELS
from methods import get_method
from methods.core.dynamics import Proxy, train_proxy

ROOT = Path(__file__).resolve().parent.parent


def naive_norms(model, x, y, params=None):
    """Reference: for each example alone, backward its loss and take the norm of every grad."""
    model.eval()
    params = list(model.parameters()) if params is None else params
    out = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    return torch.stack(out)


def _ctx():
    return synthetic_ctx(n=48, model="cnn", model_options={"width": 4}, epochs=3)


@pytest.mark.parametrize("epoch", [0, 2])
def test_grand_method_is_the_mean_over_runs_of_exact_norms_at_epoch_t(epoch):
    ctx = _ctx()
    runs = get_method("grand", {"epoch": epoch, "runs": 2}).score_runs(ctx)
    for k in range(2):
        model = train_proxy(_ctx(), Proxy(), k, stop_epoch=epoch)
        reference = naive_norms(model, ctx.train_x, ctx.train_y).numpy()
        assert runs[k] == pytest.approx(reference, rel=1e-4)
    assert not np.allclose(runs[0], runs[1])
    assert ctx.cost.trainings_run == (0 if epoch == 0 else 2)  # t=0: untrained networks


def test_grand_keep_hard_keeps_the_largest_gradient_norms():
    from methods.core.select import PruneSpec, select

    ctx = _ctx()
    scores = get_method("grand", {"epoch": 1, "runs": 1}).score(ctx)
    model = train_proxy(_ctx(), Proxy(), 0, stop_epoch=1)
    reference = naive_norms(model, ctx.train_x, ctx.train_y).numpy()
    kept = select(scores, ctx.labels, PruneSpec(fraction=0.75), seed=0)
    assert set(kept) == set(np.argsort(-reference)[: kept.size])


SWIN = {  # 8x8 tokens in 4x4 windows: 4 windows per image
    "arch": "swin_tiny_patch4_window7_224",
    "kwargs": {"patch_size": 1, "window_size": 4, "embed_dim": 8, "depths": [1], "num_heads": [1]},
}
LEVIT = {  # 32x32 images through the 16x stem: 2x2 tokens per image
    "arch": "levit_128s",
    "kwargs": {
        "embed_dim": [16],
        "key_dim": 8,
        "num_heads": [2],
        "depth": [1],
        "attn_ratio": [2.0],
        "mlp_ratio": [2.0],
    },
}


@pytest.mark.parametrize(
    ("options", "size", "layer"),
    [(SWIN, 8, "body.layers.0.blocks.0.attn.qkv"), (LEVIT, 32, "body.stages.0.blocks.0.attn.qkv")],
)
def test_a_batch_folded_with_windows_or_tokens_is_refused_when_the_method_is_checked(
    options, size, layer
):
    ctx = synthetic_ctx(n=4, model="timm", model_options=options, size=size)
    with pytest.raises(ConfigError, match="method.params=last_layer") as err:
        get_method("grand", {"epoch": 1, "runs": 1}).check(ctx)
    assert f"layer '{layer}" in str(err.value)
    assert "folded with 4 windows/tokens per example" in str(err.value)
    get_method("grand", {"epoch": 1, "runs": 1, "params": "last_layer"}).check(ctx)


def test_swin_with_several_windows_is_one_line_exit_2_and_no_record_before_any_training(
    tmp_path,
):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    kwargs = ",".join(f"{k}:{v}".replace(" ", "") for k, v in SWIN["kwargs"].items())
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "method=grand",
            "train.epochs=1",
            "model=timm",
            f"model.arch={SWIN['arch']}",
            f"model.kwargs={{{kwargs}}}",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "folded with 4 windows/tokens" in line and "method.params=last_layer" in line, line
    written = [p for d in ("results", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert not written  # no record, no proxy training, no score


class ReadsTheData(nn.Module):
    """A scale read out of the data with .item(): its per-example replay cannot run."""

    def __init__(self, features):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))

    def forward(self, x):
        return x * self.scale * float(x.abs().max().item())


def test_a_site_that_cannot_be_replayed_is_refused_when_the_method_is_checked(monkeypatch):
    def body(in_channels, image_size):
        features = in_channels * image_size[0] * image_size[1]
        return nn.Sequential(nn.Flatten(), ReadsTheData(features)), features

    monkeypatch.setitem(MODELS._items, "reads_the_data", body)
    monkeypatch.setitem(MODELS._origins, "reads_the_data", "tests")
    ctx = synthetic_ctx(n=4, model="reads_the_data")
    with pytest.raises(ConfigError, match=r"'body.1' \(ReadsTheData\) could not be replayed"):
        get_method("grand", {"epoch": 1, "runs": 1}).check(ctx)
