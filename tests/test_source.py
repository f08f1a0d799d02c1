"""ExampleSource: the trainer and score passes read examples through it, in memory or not."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_ctx

from benchmarks.augment import Augment
from benchmarks.data.source import ExampleSource, NotInMemory, TensorSource
from benchmarks.errors import ConfigError
from benchmarks.models import build_model
from benchmarks.seeding import derive_seed
from benchmarks.train import TrainSettings, batch_order, lr_factor, train
from methods import get_method


def _toy(n=40):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return x, (x.float().mean(dim=(1, 2, 3)) > 127).long()


def _model():
    torch.manual_seed(0)
    return build_model("mlp", 1, 2, (8, 8), (0.5,), (0.25,))


def test_in_memory_training_is_the_plain_gather_and_augment_loop():
    """The trainer over a TensorSource takes bitwise the steps of the loop it replaced:
    gather the batch, augment it with a generator seeded by (order seed, step), SGD."""
    x, y = _toy()
    s = TrainSettings(epochs=3, batch_size=16, lr=0.05, schedule="cosine", amp=False)
    total, augment = 9, Augment(1, True)
    trained = _model()
    train(trained, TensorSource(x, y, augment), s, total, order_seed=5)

    reference = _model()
    reference.train()
    opt = torch.optim.SGD(
        reference.parameters(), lr=s.lr, momentum=s.momentum, nesterov=True, weight_decay=5e-4
    )
    for step, idx in batch_order(x.shape[0], total, s.batch_size, 5, torch.device("cpu")):
        for group in opt.param_groups:
            group["lr"] = s.lr * lr_factor(step, total, s)
        gen = torch.Generator().manual_seed(derive_seed(5, "augment", step))
        logits = reference(augment(x[idx], gen)).float()
        loss = F.cross_entropy(logits, y[idx], reduction="none").mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for a, b in zip(trained.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_eval_batches_walk_the_examples_in_the_order_asked():
    x, y = _toy(10)
    source = TensorSource(x, y)
    ((index, images, labels),) = source.eval_batches()
    assert index.tolist() == list(range(10)) and torch.equal(images, x)
    assert torch.equal(labels, y)
    chunks = list(source.eval_batches(4, torch.tensor([7, 1, 3, 9, 0])))
    assert [c[0].tolist() for c in chunks] == [[7, 1, 3, 9], [0]]
    assert torch.equal(torch.cat([c[1] for c in chunks]), x[[7, 1, 3, 9, 0]])
    assert torch.equal(torch.cat([c[2] for c in chunks]), y[[7, 1, 3, 9, 0]])


def test_subset_reads_the_kept_examples_in_order():
    x, y = _toy(10)
    kept = TensorSource(x, y).subset(torch.tensor([2, 5, 8]))
    assert kept.n == 3 and torch.equal(kept.images, x[[2, 5, 8]])
    assert torch.equal(kept.labels, y[[2, 5, 8]])


def test_fingerprint_follows_images_and_labels():
    x, y = _toy(10)
    same = TensorSource(x.clone(), y.clone()).fingerprint
    assert TensorSource(x, y).fingerprint == same
    assert TensorSource(x, 1 - y).fingerprint != same
    flipped = x.clone()
    flipped[3, 0, 0, 0] ^= 1
    assert TensorSource(flipped, y).fingerprint != same


class _OnDisk(ExampleSource):
    """A stand-in for a streamed source: the same examples, never one tensor."""

    def __init__(self, memory: TensorSource) -> None:
        self.memory, self.labels, self.num_classes = memory, memory.labels, memory.num_classes

    image_shape = property(lambda self: self.memory.image_shape)
    fingerprint = property(lambda self: self.memory.fingerprint)
    in_memory = property(lambda self: False)

    def train_batch(self, idx: torch.Tensor, seed: int, rows=None) -> torch.Tensor:
        return self.memory.train_batch(idx, seed, rows)

    def eval_batches(self, batch_size=None, indices=None) -> Iterator:
        return self.memory.eval_batches(batch_size or 7, indices)

    def subset(self, positions: torch.Tensor) -> ExampleSource:
        return _OnDisk(self.memory.subset(positions))

    def with_labels(self, labels: torch.Tensor) -> ExampleSource:
        return _OnDisk(self.memory.with_labels(labels))


def _streamed(ctx):
    ctx.streamed = _OnDisk(ctx.source)
    ctx.train_x = None
    return ctx


@pytest.mark.parametrize("name", ["input_norm"])
def test_pixel_methods_score_batch_by_batch_as_on_one_tensor(name):
    """A method reading raw pixels gets the same scores from blocks of 7 as from the tensor."""
    memory = get_method(name, {}).score(synthetic_ctx(n=30))
    streamed = get_method(name, {}).score(_streamed(synthetic_ctx(n=30)))
    np.testing.assert_array_equal(memory, streamed)


def test_reading_train_x_of_streamed_data_is_one_config_error():
    ctx = _streamed(synthetic_ctx(n=12))
    with pytest.raises(NotInMemory, match="ctx.eval_batches") as err:
        ctx.train_x.double()
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)
    assert synthetic_ctx(n=12).train_x.shape == (12, 1, 6, 6)
