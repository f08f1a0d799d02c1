"""The CUDA path against the CPU: `pytest -m cuda` on a GPU (benchmarks/speed/gpu_check.sh).

Skipped without CUDA. Tolerances: bf16 autocast carries 8 bits of mantissa, so a short
training under it lands within a few percent of the float32 CPU run; float32 on CUDA
(TF32 convolutions allowed by cuDNN's default) within about 1e-3 of float64.
"""

import copy

import numpy as np
import pytest
import torch
from synthetic import synthetic_ctx
from test_grad_norms import loop_norms

from benchmarks.augment import Augment
from benchmarks.data.source import TensorSource
from benchmarks.models import build_model
from benchmarks.train import TrainSettings, budget_steps, prepare_model, train
from methods.core.dynamics import Proxy, dynamics, eval_summaries, proxy_network
from methods.core.grad_norms import per_example_grad_norms

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long() + 2 * (x[:, 0].float().mean((1, 2)) > 127.5)
    return x, y.long()


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", 3, 4, (16, 16), (0.5,) * 3, (0.25,) * 3, {"width": 8})


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _trained(device, amp, steps_epochs=2):
    x, y = _data()
    settings = TrainSettings(epochs=steps_epochs, batch_size=64, lr=0.05, amp=amp)
    model = prepare_model(_model(), device, settings)
    train(
        model,
        TensorSource(x.to(device), y.to(device), Augment(2, True)),
        settings,
        budget_steps(512, 512, settings),
        order_seed=3,
    )
    with torch.no_grad():
        return model.eval()(x[:128].to(device)).float().cpu()


def test_a_short_training_on_the_device_equals_the_cpu_run():
    reference = _trained(torch.device("cpu"), amp=False)
    assert _rel(_trained(CUDA, amp=False), reference) < 5e-3
    assert _rel(_trained(CUDA, amp=True), reference) < 5e-2  # bf16 autocast, channels_last


def test_exact_grand_on_cuda_equals_the_float64_cpu_loop():
    x, y = _data(96, seed=1)
    model = _model(1).train()
    with torch.no_grad():  # BatchNorm statistics away from their defaults
        model(x.float())
    reference = loop_norms(copy.deepcopy(model).double(), x, y)
    on_device = per_example_grad_norms(model.to(CUDA), x.to(CUDA), y.to(CUDA), chunk_size=32)
    assert on_device.device.type == "cuda"
    assert _rel(on_device.cpu(), reference) < 5e-3


def test_dynamics_summaries_on_cuda_are_float32_with_amp_on(tmp_path):
    ctx = synthetic_ctx(tmp_path, n=256, model="cnn", model_options={"width": 4}, epochs=2)
    ctx.train_x, ctx.train_y, ctx.device = ctx.train_x.to(CUDA), ctx.train_y.to(CUDA), CUDA
    ctx.train_cfg = {**ctx.train_cfg, "amp": True}  # the proxy trains under bf16 autocast
    arrays = dynamics(ctx, Proxy(), 0, 2)
    network, _ = proxy_network(ctx, Proxy(), 0, 2)
    cpu = network.cpu().float()
    with torch.no_grad():
        exact = eval_summaries(cpu(ctx.train_x.cpu()), ctx.train_y.cpu())
    for name in ("el2n", "p_true", "entropy", "margin"):
        assert np.abs(arrays[name][2] - exact[name].numpy()).max() < 1e-3, name


def _copies(prof, kind):
    return sum(e.count for e in prof.key_averages() if f"Memcpy {kind}" in e.key)


def _profiled_training(epochs):
    x, y = _data()
    settings = TrainSettings(epochs=epochs, batch_size=32, lr=0.05)
    model = prepare_model(_model(), CUDA, settings)
    x, y = x.to(CUDA), y.to(CUDA)
    total = budget_steps(512, 512, settings)
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        train(model, TensorSource(x, y, Augment(2, True)), settings, total, order_seed=0)
        torch.cuda.synchronize()
    return prof, total


def test_data_and_batches_never_leave_the_device_in_the_training_loop():
    """Copies scale with epochs (a permutation up, the epoch's loss down), not with steps."""
    prof, total = _profiled_training(epochs=2)
    assert total == 32
    assert _copies(prof, "DtoH") <= 2 * 4  # per epoch: the loss and accuracy read once
    assert _copies(prof, "HtoD") <= 2 * 4  # per pass: its permutation
