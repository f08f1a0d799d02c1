"""Trainer: step budgets, schedules, reproducibility and divergence."""

import math

import pytest
import torch

from benchmarks.augment import Augment
from benchmarks.errors import ConfigError, RunDiverged
from benchmarks.models import build_model
from benchmarks.train import TrainSettings, batch_order, budget_steps, lr_factor, train


def test_iterations_budget_matches_full_data_steps():
    s = TrainSettings(epochs=10, batch_size=128, budget="iterations")
    full = budget_steps(50_000, 50_000, s)
    assert full == 10 * 391
    assert budget_steps(25_000, 50_000, s) == full
    assert budget_steps(5_000, 50_000, s) == full


def test_epochs_budget_takes_fewer_steps_on_the_pruned_set():
    s = TrainSettings(epochs=10, batch_size=128, budget="epochs")
    assert budget_steps(50_000, 50_000, s) == 3910
    assert budget_steps(25_000, 50_000, s) == 10 * 196
    assert budget_steps(5_000, 50_000, s) == 10 * 40


def test_step_schedule_is_data_diets():
    s = TrainSettings(schedule="step", milestones=(0.3, 0.6, 0.8), gamma=0.2)
    total = 1000
    assert lr_factor(0, total, s) == 1.0
    assert lr_factor(299, total, s) == 1.0
    assert lr_factor(300, total, s) == pytest.approx(0.2)
    assert lr_factor(600, total, s) == pytest.approx(0.04)
    assert lr_factor(999, total, s) == pytest.approx(0.008)


def test_cosine_and_onecycle_shapes():
    cos = TrainSettings(schedule="cosine")
    assert lr_factor(0, 100, cos) == 1.0
    assert lr_factor(50, 100, cos) == pytest.approx(0.5)
    one = TrainSettings(schedule="onecycle")
    assert lr_factor(0, 1000, one) == pytest.approx(1 / 25)
    assert lr_factor(300, 1000, one) == pytest.approx(1.0)
    assert max(lr_factor(s, 1000, one) for s in range(1000)) == pytest.approx(1.0)
    assert lr_factor(999, 1000, one) < 1e-3


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="train.budget='steps'"):
        TrainSettings.from_config({"budget": "steps"})
    with pytest.raises(ConfigError, match="train.schedule='linear'"):
        TrainSettings.from_config({"schedule": "linear"})


def test_batch_order_is_a_permutation_per_pass():
    batches = list(batch_order(10, 7, 4, order_seed=3, device=torch.device("cpu")))
    assert [s for s, _ in batches] == list(range(7))
    assert [len(b) for _, b in batches] == [4, 4, 2, 4, 4, 2, 4]
    first_pass = torch.cat([b for _, b in batches[:3]])
    assert sorted(first_pass.tolist()) == list(range(10))


def test_batch_order_resumes_mid_pass_with_the_same_batches():
    cpu = torch.device("cpu")
    full = list(batch_order(10, 9, 4, order_seed=3, device=cpu))
    resumed = list(batch_order(10, 9, 4, order_seed=3, device=cpu, start_step=4))
    assert [s for s, _ in resumed] == [4, 5, 6, 7, 8]
    for (_, a), (_, b) in zip(full[4:], resumed, strict=True):
        assert torch.equal(a, b)


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127).long()
    return x, y


def _trained(order_seed, init_seed=0, **kw):
    x, y = _toy()
    torch.manual_seed(init_seed)
    model = build_model("cnn", 1, 2, (8, 8), (0.5,), (0.25,))
    s = TrainSettings(epochs=2, batch_size=32, **kw)
    logs = train(model, x, y, s, budget_steps(96, 96, s), Augment(1, True), order_seed=order_seed)
    return model, logs


def test_same_seeds_give_bitwise_identical_models_on_cpu():
    a, logs_a = _trained(order_seed=1)
    b, logs_b = _trained(order_seed=1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert [log.train_loss for log in logs_a] == [log.train_loss for log in logs_b]


def test_data_order_seed_is_independent_of_init_seed():
    a, _ = _trained(order_seed=1, init_seed=0)
    b, _ = _trained(order_seed=2, init_seed=0)
    assert not all(
        torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_hooks_see_every_step_and_epoch():
    x, y = _toy()
    model = build_model("mlp", 1, 2, (8, 8), (0.5,), (0.25,))
    s = TrainSettings(epochs=3, batch_size=40)
    seen, epochs = [], []
    total = budget_steps(96, 96, s)
    train(
        model,
        x,
        y,
        s,
        total,
        Augment(),
        order_seed=0,
        on_batch=lambda step, idx, logits, t: seen.append((step, idx.numel(), logits.shape)),
        on_epoch=lambda e, m: epochs.append(e),
    )
    assert total == 9 and [s[0] for s in seen] == list(range(9))
    assert [n for _, n, _ in seen] == [40, 40, 16] * 3
    assert epochs == [1, 2, 3]


def test_a_non_finite_loss_raises_diverged():
    x, y = _toy()
    model = build_model("mlp", 1, 2, (8, 8), (0.5,), (0.25,))
    with torch.no_grad():
        model.head.weight.fill_(math.inf)
    s = TrainSettings(epochs=1, batch_size=32)
    with pytest.raises(RunDiverged, match="epoch 1"):
        train(model, x, y, s, 3, Augment(), order_seed=0)


class _Killed(Exception):
    pass


def test_a_run_resumed_from_its_checkpoint_ends_bitwise_equal(tmp_path):
    from benchmarks.train import Checkpointing

    x, y = _toy()
    s = TrainSettings(epochs=3, batch_size=20)
    total = budget_steps(96, 96, s)  # 15 steps, epochs end at 5, 10, 15

    def fresh():
        torch.manual_seed(0)
        return build_model("cnn", 1, 2, (8, 8), (0.5,), (0.25,))

    reference = fresh()
    ref_logs = train(reference, x, y, s, total, Augment(1, True), order_seed=4)

    def die_at_step_8(step, idx, logits, targets):
        if step == 8:
            raise _Killed

    ckpt = Checkpointing(tmp_path / "ckpt.pt", every_steps=3)
    with pytest.raises(_Killed):
        train(
            fresh(),
            x,
            y,
            s,
            total,
            Augment(1, True),
            order_seed=4,
            on_batch=die_at_step_8,
            checkpointing=ckpt,
        )
    assert torch.load(ckpt.path, weights_only=False)["step"] == 6
    resumed = fresh()
    logs = train(resumed, x, y, s, total, Augment(1, True), order_seed=4, checkpointing=ckpt)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [log.train_loss for log in logs] == [log.train_loss for log in ref_logs]
