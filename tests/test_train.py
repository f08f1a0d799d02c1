"""Trainer: step budgets, schedules, reproducibility and divergence."""

import math

import pytest
import torch

from benchmarks.augment import Augment
from benchmarks.data.source import TensorSource
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
    logs = train(
        model,
        TensorSource(x, y, Augment(1, True)),
        s,
        budget_steps(96, 96, s),
        order_seed=order_seed,
    )
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
        TensorSource(x, y),
        s,
        total,
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
        train(model, TensorSource(x, y), s, 3, order_seed=0)


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
    ref_logs = train(reference, TensorSource(x, y, Augment(1, True)), s, total, order_seed=4)

    def die_at_step_8(step, idx, logits, targets):
        if step == 8:
            raise _Killed

    ckpt = Checkpointing(tmp_path / "ckpt.pt", every_steps=3)
    with pytest.raises(_Killed):
        train(
            fresh(),
            TensorSource(x, y, Augment(1, True)),
            s,
            total,
            order_seed=4,
            on_batch=die_at_step_8,
            checkpointing=ckpt,
        )
    assert torch.load(ckpt.path, weights_only=False)["step"] == 6
    assert ckpt.resumed_from_step == 0
    resumed = fresh()
    logs = train(
        resumed, TensorSource(x, y, Augment(1, True)), s, total, order_seed=4, checkpointing=ckpt
    )
    assert ckpt.resumed_from_step == 6
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [log.train_loss for log in logs] == [log.train_loss for log in ref_logs]


def test_dynamic_sampler_redraws_every_pass_and_weights_losses():
    from benchmarks.train import PassSampler

    class EvenOddSampler(PassSampler):
        """Even examples on even passes, odd on odd passes; weight 2 on example 0."""

        def __init__(self, n):
            super().__init__(n)
            self.observed = []

        def choose(self, pass_no, passes, gen):
            return torch.arange(pass_no % 2, self.n, 2)

        def loss_weights(self, idx):
            return 1.0 + (idx == 0).float()

        def observe(self, idx, losses):
            self.observed.append((idx.clone(), losses.clone()))

    x, y = _toy()
    sampler = EvenOddSampler(96)
    s = TrainSettings(epochs=4, batch_size=16, budget="epochs")
    seen = []
    logs = train(
        build_model("mlp", 1, 2, (8, 8), (0.5,), (0.25,)),
        TensorSource(x, y),
        s,
        999,
        order_seed=0,
        on_batch=lambda step, idx, logits, t: seen.append(idx.clone()),
        sampler=sampler,
    )
    assert len(logs) == 4 and sampler.passes == 4
    assert sampler.seen_fraction() == 0.5
    per_pass = [torch.cat(seen[i * 3 : (i + 1) * 3]) for i in range(4)]
    for p, idx in enumerate(per_pass):
        assert sorted(idx.tolist()) == list(range(p % 2, 96, 2))
    assert sum(i.numel() for i, _ in sampler.observed) == 4 * 48


def test_rs2_sees_every_example_once_before_any_twice():
    from methods.rs2 import RS2Sampler

    sampler = RS2Sampler(10, 4)
    gen = torch.Generator().manual_seed(0)
    first = torch.cat([sampler.pass_indices(p, 5, gen) for p in range(2)])
    third = sampler.pass_indices(2, 5, gen)
    assert len(set(first.tolist())) == 8
    # the third pass takes the 2 not yet seen, then starts a fresh shuffle
    assert set(range(10)) - set(first.tolist()) <= set(third.tolist())
    assert sampler.seen_fraction() == 0.4


def test_infobatch_prunes_only_below_mean_losses_and_rescales_the_kept_ones():
    from methods.infobatch import InfoBatchSampler

    sampler = InfoBatchSampler(1000, ratio=0.5, delta=0.5)
    gen = torch.Generator().manual_seed(0)
    assert sampler.pass_indices(0, 4, gen).numel() == 1000  # unknown losses: keep all
    losses = torch.linspace(0, 1, 1000)  # below the mean 0.5: the first 500
    sampler.observe(torch.arange(1000), losses)
    chosen = sampler.pass_indices(1, 4, gen)
    dropped = sorted(set(range(1000)) - set(chosen.tolist()))
    assert all(i < 500 for i in dropped) and 200 < len(dropped) < 300
    weights = sampler.loss_weights(torch.arange(1000))
    kept_low = [i for i in range(500) if i not in set(dropped)]
    assert torch.all(weights[kept_low] == 2.0) and torch.all(weights[500:] == 1.0)
    assert sampler.pass_indices(2, 4, gen).numel() == 1000  # annealing: full data from pass 2


def test_compiled_training_step_trains_the_same_model():
    eager, eager_logs = _trained(order_seed=1)
    compiled, compiled_logs = _trained(order_seed=1, compile=True)
    for pe, pc in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5)
    losses = [log.train_loss for log in compiled_logs]
    assert losses == pytest.approx([log.train_loss for log in eager_logs], rel=1e-4)
