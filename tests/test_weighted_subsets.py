"""Weighted subsets: the trainer's per-example loss weights against per-example gradients."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.data.source import TensorSource
from benchmarks.models import build_model
from benchmarks.train import LossWeights, TrainSettings, train, weighted_batch_loss


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127).long()
    return x, y


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return build_model("mlp", 1, 2, (4, 4), (0.5,), (0.25,), options={"width": 8}).to(dtype)


def _trained(weights, epochs=2, batch_size=5):
    x, y = _data()
    model = _model()
    s = TrainSettings(epochs=epochs, batch_size=batch_size, lr=0.05)
    train(model, TensorSource(x, y), s, epochs * 3, order_seed=1, weights=weights)
    return model


@pytest.mark.parametrize("normalise", [False, True])
def test_unit_weights_train_bitwise_the_unweighted_model(normalise):
    reference = _trained(None)
    weighted = _trained(LossWeights(torch.ones(12), batch_normalise=normalise))
    for a, b in zip(reference.parameters(), weighted.parameters(), strict=True):
        assert torch.equal(a, b)


def _per_example_grads(model, x, y):
    """Gradient of each example's own loss, one backward each (the reference)."""
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(grads)


def _one_full_batch_step(weights, normalise):
    """Parameters moved by one plain SGD step (no momentum, no decay) over all 12 examples.

    The model is float64; the trainer takes the cross-entropy in float32, hence the tolerance.
    """
    x, y = _data()
    model = _model(torch.float64)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    s = TrainSettings(epochs=1, batch_size=12, lr=0.1, momentum=0.0, weight_decay=0.0)
    train(model, TensorSource(x, y), s, 1, order_seed=0, weights=LossWeights(weights, normalise))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return (before - after) / 0.1, _per_example_grads(_model(torch.float64), x, y)


def test_weight_two_doubles_an_examples_gradient_contribution():
    weights = torch.ones(12, dtype=torch.float64)
    weights[3] = 2.0
    step, grads = _one_full_batch_step(weights, normalise=False)
    expected = (grads.sum(dim=0) + grads[3]) / 12  # example 3 counted twice
    torch.testing.assert_close(step, expected, rtol=1e-5, atol=1e-7)


def test_batch_normalised_weights_give_the_weighted_mean_gradient():
    weights = torch.arange(1, 13, dtype=torch.float64)
    step, grads = _one_full_batch_step(weights, normalise=True)
    expected = (weights[:, None] * grads).sum(dim=0) / weights.sum()
    torch.testing.assert_close(step, expected, rtol=1e-5, atol=1e-7)


def test_batch_normalisation_divides_by_the_batch_mean_weight_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0])
    weights = torch.tensor([1.0, 1.0, 4.0])
    assert weighted_batch_loss(losses, weights).item() == pytest.approx((1 + 2 + 12) / 3)
    assert weighted_batch_loss(losses, weights, True).item() == pytest.approx((1 + 2 + 12) / 6)


def test_bad_weights_are_refused_before_training():
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(torch.tensor([1.0, -1.0]))
    x, y = _data()
    with pytest.raises(ValueError, match="3 loss weights for 12 examples"):
        train(
            _model(),
            TensorSource(x, y),
            TrainSettings(epochs=1),
            1,
            0,
            weights=LossWeights(torch.ones(3)),
        )
