"""One recorded proxy training per proxy run feeds every score, in any order of methods and jobs.

The scores it gives are those of independently trained networks (the same seeds, no
recorder, no cache), and the recorded cost is what each score needs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from patience import HUNG_AFTER_S
from synthetic import synthetic_ctx
from test_grand import naive_norms

import benchmarks.train
from methods import get_method
from methods.core.dynamics import (
    DynamicsRecorder,
    Proxy,
    dynamics,
    eval_summaries,
    proxy_network,
    train_proxy,
)
from methods.core.features import proxy_features
from methods.forgetting import forgetting_score

ROOT = Path(__file__).resolve().parent.parent
GRID_METHODS = ("el2n", "grand", "forgetting", "aum", "entropy", "moderate", "kcenter")
K = 3
TINY = [
    "data.max_train=120",
    "model=mlp",
    "train.epochs=3",
    "score.epoch=1",
    f"score.runs={K}",
    "run.checkpoint_steps=0",
]
WORKER = """
import json, sys
from hydra import compose, initialize_config_dir
from benchmarks.pipeline import run
cells, conf, tiny = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    for method, fraction, seed in cells:
        overrides = [f"method={method}", f"prune.fraction={fraction}", f"seed={seed}", *tiny]
        run(compose("config", overrides=overrides), progress=False)
"""


def _records(results):
    return [json.loads(p.read_text()) for p in results.glob("*.json")]


def _assert_k_proxies(records, cells):
    assert len(records) == cells and {r["status"] for r in records} == {"finished"}
    costs = [r["selection"]["score_cost"] for r in records]
    assert sum(c["trainings_run"] for c in costs) == K
    # run 0 to the end of its 3 epochs, runs 1..K-1 to the score epoch 1, each once
    assert sum(c["epochs_run"] for c in costs) == 3 + (K - 1) * 1


def test_a_grid_of_seven_scores_three_fractions_three_seeds_trains_k_proxies(tmp_path):
    from hydra import compose, initialize_config_dir

    from benchmarks.pipeline import run

    cells = [(m, f, s) for m in GRID_METHODS for f in (0.3, 0.5, 0.7) for s in (0, 1, 2)]
    places = [f"results.dir={tmp_path / 'results'}", f"cache.dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for i in np.random.default_rng(0).permutation(len(cells)):
            method, fraction, seed = cells[i]
            overrides = [f"method={method}", f"prune.fraction={fraction}", f"seed={seed}"]
            run(compose("config", overrides=[*overrides, *TINY, *places]), progress=False)
    _assert_k_proxies(_records(tmp_path / "results"), len(cells))


def test_concurrent_jobs_sharing_the_cache_train_k_proxies(tmp_path):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    cells = [(m, 0.5, 0) for m in GRID_METHODS]
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(part), str(ROOT / "conf"), json.dumps(TINY)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in (cells[0::2], cells[1::2][::-1])
    ]
    for job in jobs:
        assert job.wait(timeout=HUNG_AFTER_S) == 0, job.stderr.read()
    _assert_k_proxies(_records(tmp_path / "results"), len(cells))


def _ctx(cache_dir=None):
    return synthetic_ctx(cache_dir, n=48, model="cnn", model_options={"width": 4}, epochs=3)


def test_every_score_equals_the_one_of_independently_trained_networks(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.keep_weights_at = (1,)  # the shared score epoch, as the pipeline announces it
    # forgetting first: run 0 is recorded to the end before EL2N and GraNd read epoch 1
    scores = {
        name: get_method(name, options).score_runs(ctx)
        for name, options in [
            ("forgetting", {}),
            ("el2n", {"epoch": 1, "runs": 2}),
            ("kcenter", {}),
            ("grand", {"epoch": 1, "runs": 2}),
            ("entropy", {"epoch": 2}),
        ]
    }
    assert ctx.cost.trainings_run == 2
    assert proxy_features(ctx, Proxy(), 0, 3) == pytest.approx(
        train_proxy(_ctx(), Proxy(), 0, 3).features(ctx.train_x).detach().numpy(), abs=1e-6
    )
    for k in range(2):
        network = train_proxy(_ctx(), Proxy(), k, 1)  # trained alone, nothing recorded
        with torch.no_grad():
            p = network(ctx.train_x).double().softmax(1).numpy()
        el2n = np.linalg.norm(p - np.eye(2)[ctx.labels], axis=1)
        assert scores["el2n"][k] == pytest.approx(el2n, rel=1e-6)
        reference = naive_norms(network, ctx.train_x, ctx.train_y).numpy()
        assert scores["grand"][k] == pytest.approx(reference, rel=1e-4)
    at_two = train_proxy(_ctx(), Proxy(), 0, 2)
    with torch.no_grad():
        p = at_two(ctx.train_x).double().softmax(1).numpy()
    assert scores["entropy"][0] == pytest.approx(-(p * np.log(p)).sum(1), rel=1e-5)
    alone = DynamicsRecorder(ctx.source, eval_batch_size=64)
    train_proxy(_ctx(), Proxy(), 0, 3, alone.on_batch, alone.on_epoch)
    counts = (alone.forgetting, alone.presentations, alone.ever_correct)
    assert np.array_equal(scores["forgetting"][0], forgetting_score(*(c.numpy() for c in counts)))


def test_the_cost_of_a_score_is_what_it_needs_whatever_the_cache_holds(tmp_path):
    first = _ctx(tmp_path)
    get_method("forgetting", {}).score_runs(first)  # records run 0 over all 3 epochs
    assert first.cost.proxy_epochs == 3 and first.cost.proxy_trainings == 1
    at_init = _ctx(tmp_path)
    get_method("el2n", {"epoch": 0, "runs": 4}).score_runs(at_init)
    assert (at_init.cost.proxy_trainings, at_init.cost.proxy_epochs) == (0, 0)
    early = _ctx(tmp_path)
    get_method("el2n", {"epoch": 1, "runs": 1}).score_runs(early)
    arrays = dynamics(_ctx(tmp_path), Proxy(), 0, 3)
    assert early.cost.trainings_run == 0
    assert (early.cost.proxy_trainings, early.cost.proxy_epochs) == (1, 1)
    assert early.cost.seconds == pytest.approx(arrays["seconds"][1])
    assert arrays["seconds"][1] < arrays["seconds"][3]
    # GraNd at epoch 1 needs the same epoch of the same run, plus its own gradient pass
    both = _ctx(tmp_path)
    get_method("el2n", {"epoch": 1, "runs": 1}).score_runs(both)
    get_method("grand", {"epoch": 1, "runs": 1}).score_runs(both)
    assert (both.cost.proxy_trainings, both.cost.proxy_epochs) == (1, 1)
    assert both.cost.seconds > early.cost.seconds


def _bf16_on_cpu(device, enabled):
    """The CUDA code path's autocast, on the CPU: what the trainer does on a GPU with amp."""
    if enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def test_dynamics_summaries_are_float32_under_bf16_autocast(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.train, "autocast_for", _bf16_on_cpu)
    ctx = _ctx(tmp_path)
    arrays = dynamics(ctx, Proxy(), 0, 2)  # the proxy itself trains under bf16 autocast
    network, _ = proxy_network(ctx, Proxy(), 0, 2)
    with torch.no_grad():
        exact = eval_summaries(network(ctx.train_x), ctx.train_y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            blurred = eval_summaries(network(ctx.train_x).float(), ctx.train_y)
    assert (exact["p_true"] - blurred["p_true"]).abs().max() > 1e-4  # bf16 would be seen
    with torch.autocast("cpu", dtype=torch.bfloat16):  # even inside an outer autocast
        recorder = DynamicsRecorder(ctx.source, eval_batch_size=16)
        recorder.on_epoch(2, network)
    for name in ("el2n", "p_true", "entropy", "margin"):
        assert arrays[name][2] == pytest.approx(exact[name].numpy(), abs=1e-6), name
        assert recorder.epochs[2][name].numpy() == pytest.approx(exact[name].numpy(), abs=1e-6)
