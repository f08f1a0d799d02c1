"""Preemption and resumption: the state is saved at the step the job's signal arrives, and
dynamic samplers (RS2, InfoBatch) resume at any step with bitwise the same model."""

import os
import signal

import pytest
import torch

from benchmarks.augment import Augment
from benchmarks.data.source import TensorSource
from benchmarks.models import build_model
from benchmarks.train import Checkpointing, TrainSettings, budget_steps, train
from methods.infobatch import InfoBatchSampler
from methods.rs2 import RS2Sampler


class _Stopped(Exception):
    """Stands for the job ending (submitit's handler exits; a kill -9 ends it)."""


def _toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127).long()
    return x, y


def _fresh():
    torch.manual_seed(0)
    return build_model("cnn", 1, 2, (8, 8), (0.5,), (0.25,)).double()


def _train(model, settings, sampler=None, **kw):
    x, y = _toy()
    total = budget_steps(96, 96, settings)
    return train(
        model,
        TensorSource(x, y, Augment(1, True)),
        settings,
        total,
        order_seed=3,
        sampler=sampler,
        **kw,
    )


def _same(a, b):
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def _logs(logs):
    return [{**log.as_dict(), "seconds": 0} for log in logs]


@pytest.fixture
def submitit_like_handler():
    """A Python handler on the preemption signal, as submitit installs: it ends the job."""
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise _Stopped

    old = signal.signal(signal.SIGUSR2, handler)
    yield calls
    signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize("every", [0, 5])
def test_the_preemption_signal_saves_at_the_end_of_its_step_then_the_handler_runs(
    tmp_path, submitit_like_handler, every
):
    settings = TrainSettings(epochs=3, batch_size=20)  # 15 steps
    reference = _fresh()
    ref_logs = _train(reference, settings)

    def signal_in_step_7(step, idx, logits, targets):
        if step == 7:
            os.kill(os.getpid(), signal.SIGUSR2)  # arrives mid-step, before the update

    ckpt = Checkpointing(tmp_path / "ckpt.pt", every_steps=every)
    with pytest.raises(_Stopped):
        _train(_fresh(), settings, on_batch=signal_in_step_7, checkpointing=ckpt)
    assert submitit_like_handler == [signal.SIGUSR2]  # obeyed, once, after the save
    assert torch.load(ckpt.path, weights_only=False)["step"] == 8  # not 5, the periodic one
    assert signal.getsignal(signal.SIGUSR2) is not None

    resumed = _fresh()
    logs = _train(resumed, settings, checkpointing=ckpt)
    assert ckpt.resumed_from_step == 8
    _same(resumed, reference)
    assert _logs(logs) == _logs(ref_logs)


def test_a_handler_that_returns_gets_one_save_and_training_goes_on(tmp_path):
    """submitit's handler returns on a task other than rank 0 (only rank 0 requeues), here
    while that task trains a proxy run alone: the state is saved once, at the signal's
    step, and training ends as the uninterrupted run does, saving no checkpoint per step."""
    settings = TrainSettings(epochs=3, batch_size=20)  # 15 steps
    reference = _fresh()
    _train(reference, settings)
    calls = []

    def signal_in_step_7(step, idx, logits, targets):
        if step == 7:
            os.kill(os.getpid(), signal.SIGUSR2)

    old = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        ckpt = Checkpointing(tmp_path / "ckpt.pt", every_steps=0)
        model = _fresh()
        _train(model, settings, on_batch=signal_in_step_7, checkpointing=ckpt)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls == [signal.SIGUSR2]
    assert torch.load(ckpt.path, weights_only=False)["step"] == 8
    _same(model, reference)


def test_without_checkpointing_the_signal_is_handled_at_once(tmp_path, submitit_like_handler):
    seen = []

    def signal_in_step_2(step, idx, logits, targets):
        seen.append(step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)

    with pytest.raises(_Stopped):
        _train(_fresh(), TrainSettings(epochs=3, batch_size=20), on_batch=signal_in_step_2)
    assert seen == [0, 1, 2]


SAMPLERS = {
    "rs2": lambda: RS2Sampler(96, 40),
    "infobatch": lambda: InfoBatchSampler(96, ratio=0.5, delta=0.75),
}


@pytest.mark.parametrize(("name", "budget"), [("rs2", "epochs"), ("infobatch", "iterations")])
@pytest.mark.parametrize("stop_at", [4, 6])  # mid-pass, and right after a pass ends
def test_a_dynamic_run_killed_mid_training_resumes_bitwise(tmp_path, name, budget, stop_at):
    # batches of 16: RS2 passes of 40 take steps 0-2, 3-5, ...; InfoBatch's first pass 0-5
    settings = TrainSettings(epochs=4, batch_size=16, budget=budget)
    reference, ref_sampler = _fresh(), SAMPLERS[name]()
    ref_logs = _train(reference, settings, ref_sampler)

    def stop(step, idx, logits, targets):
        if step == stop_at:
            raise _Stopped

    ckpt = Checkpointing(tmp_path / "ckpt.pt", every_steps=2)
    with pytest.raises(_Stopped):
        _train(_fresh(), settings, SAMPLERS[name](), on_batch=stop, checkpointing=ckpt)
    saved = torch.load(ckpt.path, weights_only=False)
    assert saved["step"] == stop_at and (saved["cursor"]["order"] is None) == (stop_at == 6)
    resumed, sampler = _fresh(), SAMPLERS[name]()
    logs = _train(resumed, settings, sampler, checkpointing=ckpt)
    assert ckpt.resumed_from_step == stop_at
    _same(resumed, reference)
    assert _logs(logs) == _logs(ref_logs)
    assert (sampler.passes, sampler.presented) == (ref_sampler.passes, ref_sampler.presented)
