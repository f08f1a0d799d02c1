"""The grand method: exact norms of each proxy run's network, averaged, kept hardest first.

The engine itself (methods.core.grad_norms) is tested layer by layer in test_grad_norms.py.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_ctx

from methods import get_method
from methods.core.dynamics import Proxy, train_proxy


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
