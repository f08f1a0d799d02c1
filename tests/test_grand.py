"""GraNd: the exact per-example gradient norm against a one-backward-per-example loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.augment import Augment
from benchmarks.models import build_model
from methods import get_method
from methods.base import ScoreContext
from methods.dynamics import Proxy, train_proxy
from methods.grad_norms import per_example_grad_norms


def naive_norms(model, x, y, params=None):
    """Reference: for each example alone, backward its loss and take the norm of every grad."""
    model.eval()
    params = list(model.parameters()) if params is None else params
    out = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    return torch.stack(out)


def _warmed(name, channels, size, classes=10):
    """A float64 model whose BatchNorm running stats are not the 0/1 defaults."""
    torch.manual_seed(0)
    model = build_model(name, channels, classes, (size, size), (0.4,) * channels, (0.3,) * channels)
    model.double().train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 256, (8, channels, size, size), dtype=torch.uint8))
    return model


def _batch(channels, size, n=6, classes=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("cnn", 1, 8), ("cnn", 3, 16), ("mlp", 1, 8), ("resnet18", 3, 16)],
)
def test_all_parameters_equal_the_naive_loop(name, channels, size):
    model = _warmed(name, channels, size)
    x, y = _batch(channels, size)
    exact = per_example_grad_norms(model, x, y, chunk_size=4)
    reference = naive_norms(model, x, y)
    assert torch.max((exact - reference).abs() / reference).item() < 1e-10


class StridedConvNet(nn.Module):
    """Convs with stride, padding, dilation and bias, a wide-input conv, and a biased linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 20, 3, stride=2, padding=1, bias=True)
        self.b = nn.Conv2d(20, 24, 3, padding=2, dilation=2, bias=True)
        self.c = nn.Conv2d(24, 8, 1, bias=False)
        self.head = nn.Linear(8 * 5 * 5, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        return self.head(self.c(x).flatten(1))


def test_strided_dilated_biased_convs_and_linear_equal_the_naive_loop():
    torch.manual_seed(0)
    model = StridedConvNet().double()
    x = torch.randn(5, 3, 10, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    exact = per_example_grad_norms(model, x, y, chunk_size=2)
    assert torch.allclose(exact, naive_norms(model, x, y), rtol=1e-10)


def test_last_layer_equals_autograd_of_the_head():
    model = _warmed("cnn", 3, 16)
    x, y = _batch(3, 16)
    closed = per_example_grad_norms(model, x, y, params="last_layer")
    reference = naive_norms(model, x, y, params=[model.head.weight, model.head.bias])
    assert torch.allclose(closed, reference, rtol=1e-10)


def test_chunking_changes_nothing_and_model_state_is_left_alone():
    model = _warmed("cnn", 3, 16)
    x, y = _batch(3, 16, n=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    results = [per_example_grad_norms(model, x, y, chunk_size=c) for c in (1, 3, 7)]
    assert all(torch.allclose(results[0], r, rtol=1e-12) for r in results[1:])
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats untouched


def test_bad_params_value_is_named():
    model = _warmed("mlp", 1, 8)
    x, y = _batch(1, 8)
    with pytest.raises(ValueError, match="params='bias'"):
        per_example_grad_norms(model, x, y, params="bias")


def _ctx():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, 1, 6, 6), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long()
    return ScoreContext(
        train_x=x,
        train_y=y,
        num_classes=2,
        mean=(0.5,),
        std=(0.29,),
        device=torch.device("cpu"),
        seed=0,
        data_fingerprint="synthetic",
        augment=Augment(1, True),
        model_name="cnn",
        model_options={"width": 4},
        train_cfg={"epochs": 3, "batch_size": 16, "lr": 0.05},
    )


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
    from methods.select import PruneSpec, select

    ctx = _ctx()
    scores = get_method("grand", {"epoch": 1, "runs": 1}).score(ctx)
    model = train_proxy(_ctx(), Proxy(), 0, stop_epoch=1)
    reference = naive_norms(model, ctx.train_x, ctx.train_y).numpy()
    kept = select(scores, ctx.labels, PruneSpec(fraction=0.75), seed=0)
    assert set(kept) == set(np.argsort(-reference)[: kept.size])
