"""Training-dynamics scores against hand-computed references on scripted predictions."""

import itertools

import numpy as np
import pytest
import torch
from synthetic import synthetic_ctx

from benchmarks.data.source import TensorSource
from benchmarks.seeding import derive_seed
from methods import get_method
from methods.core.dynamics import (
    DynamicsRecorder,
    Proxy,
    dynamics,
    eval_summaries,
    logit_margin,
    train_proxy,
)
from methods.forgetting import forgetting_score


def _logits_for(correct_flags, y, k=3):
    """Logits that classify example i correctly iff correct_flags[i]."""
    logits = torch.zeros(len(y), k)
    for i, (ok, label) in enumerate(zip(correct_flags, y, strict=True)):
        logits[i, label if ok else (label + 1) % k] = 2.0
    return logits


def toneva_forgetting(sequence):
    """Reference: transitions correct->incorrect; never learned -> number of presentations."""
    if not any(sequence):
        return len(sequence)
    return sum(1 for prev, cur in itertools.pairwise(sequence) if prev and not cur)


SEQUENCES = [
    [0, 1, 1, 0, 1, 0],  # learned, forgotten twice
    [1, 1, 1, 1, 1, 1],  # never forgotten
    [0, 0, 0, 0, 0, 0],  # never learned -> maximum (6)
    [1, 0, 1, 0, 1, 0],  # forgotten three times
    [0, 0, 0, 0, 0, 1],  # learned at the end, never forgotten
]


def test_forgetting_matches_the_reference_on_scripted_presentations():
    y = torch.tensor([0, 1, 2, 0, 1])
    rec = DynamicsRecorder(TensorSource(torch.zeros(5, 1, 1, 1), y), eval_batch_size=8)
    for step in range(6):
        flags = [s[step] for s in SEQUENCES]
        rec.on_batch(step, torch.arange(5), _logits_for(flags, y.tolist()), y)
    score = forgetting_score(
        rec.forgetting.numpy(), rec.presentations.numpy(), rec.ever_correct.numpy()
    )
    assert score.tolist() == [toneva_forgetting(s) for s in SEQUENCES] == [2, 0, 6, 3, 0]
    # the never-learned example ranks above every learned one
    assert score.argmax() == 2


def test_forgetting_counts_only_the_presentations_of_each_example():
    y = torch.tensor([0, 0])
    rec = DynamicsRecorder(TensorSource(torch.zeros(2, 1, 1, 1), y), eval_batch_size=8)
    rec.on_batch(0, torch.tensor([0]), _logits_for([1], [0]), y[:1])
    rec.on_batch(1, torch.tensor([1]), _logits_for([0], [0]), y[1:])
    rec.on_batch(2, torch.tensor([0]), _logits_for([0], [0]), y[:1])
    assert rec.forgetting.tolist() == [1, 0]
    assert rec.presentations.tolist() == [2, 1]


def test_aum_is_the_mean_logit_margin_negated():
    y = torch.tensor([0, 2])
    rec = DynamicsRecorder(TensorSource(torch.zeros(2, 1, 1, 1), y), eval_batch_size=8)
    scripted = [
        torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 1.0]]),
        torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 4.0]]),
    ]
    for step, logits in enumerate(scripted):
        rec.on_batch(step, torch.arange(2), logits, y)
    # example 0: margins 3-1=2, 1-2=-1 -> AUM 0.5; example 1: 1-5=-4, 4-1=3 -> AUM -0.5
    aum = (rec.margin_sum / rec.presentations).numpy()
    assert aum.tolist() == pytest.approx([0.5, -0.5])
    assert logit_margin(scripted[0], y).tolist() == [2.0, -4.0]


def test_eval_summaries_match_hand_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 0])
    s = eval_summaries(logits, y)
    p = np.exp(logits.numpy().astype(np.float64))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[[0, 0]]
    assert s["el2n"].numpy() == pytest.approx(np.sqrt(((p - onehot) ** 2).sum(1)))
    assert s["entropy"].numpy() == pytest.approx(-(p * np.log(p)).sum(1))
    top = np.sort(p, 1)[:, ::-1]
    assert s["margin"].numpy() == pytest.approx(top[:, 0] - top[:, 1])
    assert s["least_confidence"].numpy() == pytest.approx(1 - top[:, 0])
    assert s["correct"].tolist() == [1.0, 0.0]


def _ctx(tmp_path=None, n=64, seed=0):
    return synthetic_ctx(tmp_path, n=n, seed=seed)


def test_el2n_equals_hand_computed_error_norm_of_each_run_and_their_mean():
    ctx = _ctx()
    method = get_method("el2n", {"epoch": 2, "runs": 3})
    runs = method.score_runs(ctx)
    assert runs.shape == (3, ctx.n)
    for k in range(3):
        model = train_proxy(_ctx(), Proxy(), k, stop_epoch=2)
        with torch.no_grad():
            p = model(ctx.train_x).double().softmax(1).numpy()
        hand = np.linalg.norm(p - np.eye(2)[ctx.labels], axis=1)
        assert runs[k] == pytest.approx(hand, rel=1e-5)
    assert not np.allclose(runs[0], runs[1])  # independent inits and data orders
    assert method.score(ctx) == pytest.approx(runs.mean(axis=0))


def test_el2n_at_epoch_zero_is_the_untrained_network():
    ctx = _ctx()
    runs = get_method("el2n", {"epoch": 0, "runs": 1}).score_runs(ctx)
    model = ctx.build_model(None, derive_seed(Proxy().run_seed(0), "init"))
    with torch.no_grad():
        p = model.eval()(ctx.train_x).double().softmax(1).numpy()
    assert runs[0] == pytest.approx(np.linalg.norm(p - np.eye(2)[ctx.labels], axis=1), rel=1e-5)
    assert ctx.cost.proxy_epochs == 0


def test_one_proxy_training_feeds_el2n_forgetting_aum_and_uncertainty(tmp_path):
    ctx = _ctx(tmp_path)
    for name, options in [
        ("forgetting", {}),
        ("el2n", {"epoch": 1, "runs": 1}),
        ("el2n", {"epoch": 3, "runs": 1}),
        ("aum", {}),
        ("entropy", {}),
        ("margin", {"epoch": 2}),
        ("least_confidence", {}),
    ]:
        get_method(name, options).score_runs(ctx)
    assert ctx.cost.trainings_run == 1
    again = _ctx(tmp_path)
    get_method("forgetting", {}).score_runs(again)
    assert again.cost.trainings_run == 0
    assert again.cost.proxy_trainings == 1 and again.cost.proxy_epochs == 4


def test_a_longer_request_continues_the_stored_training_exactly(tmp_path):
    ctx = _ctx(tmp_path / "continued")
    early = get_method("el2n", {"epoch": 1, "runs": 1}).score_runs(ctx)
    continued = dynamics(ctx, Proxy(), 0, 4)
    assert ctx.cost.trainings_run == 1 and ctx.cost.epochs_run == 4
    straight = dynamics(_ctx(tmp_path / "straight"), Proxy(), 0, 4)
    for name, values in straight.items():
        if name != "seconds":  # the same training, bit for bit, stopped once or not
            assert np.array_equal(continued[name], values), name
    again = get_method("el2n", {"epoch": 1, "runs": 1}).score_runs(ctx)
    assert ctx.cost.trainings_run == 1 and again == pytest.approx(early)


def test_score_epoch_beyond_the_proxy_schedule_is_named():
    from benchmarks.errors import ConfigError

    with pytest.raises(ConfigError, match="score epoch 9 is outside the proxy training's 0..4"):
        get_method("el2n", {"epoch": 9, "runs": 1}).score_runs(_ctx())


def test_unknown_method_and_proxy_options_are_named():
    from benchmarks.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'el3n'"):
        get_method("el3n")
    with pytest.raises(ConfigError, match="method 'el2n' has no option epochs"):
        get_method("el2n", {"epochs": 3})
    with pytest.raises(ConfigError, match="method.proxy has no option lr"):
        get_method("el2n", {"proxy": {"lr": 0.1}})
