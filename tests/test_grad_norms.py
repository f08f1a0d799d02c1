"""Exact per-example gradient norms against an independent one-backward-per-example loop."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods.core.grad_norms as grad_norms
from benchmarks.models import build_model
from methods.core.grad_norm_plan import trace
from methods.core.grad_norms import per_example_grad_norms

# torch's note that "same" padding with an even kernel pads a copy: the point of that layer
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def loop_norms(model, x, y, only=None):
    """Reference: per example, zero the grads, backward its loss alone, norm of every grad."""
    model = copy.deepcopy(model).eval()
    params = [p for p in model.parameters() if p.requires_grad] if only is None else only(model)
    out = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad for p in params if p.grad is not None]
        out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    return torch.stack(out)


def max_rel_err(a, b):
    return ((a.double() - b.double()).abs() / b.double().abs()).max().item()


def warmed(name, channels, size, classes=10, dtype=torch.float64, **options):
    """A model whose BatchNorm running statistics are far from their 0/1 defaults."""
    torch.manual_seed(0)
    stats = (0.4,) * channels, (0.3,) * channels
    model = build_model(name, channels, classes, (size, size), *stats, options)
    model.to(dtype).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8))
    return model


def batch(channels, size, n=6, classes=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("cnn", 1, 8), ("cnn", 3, 16), ("mlp", 1, 8), ("resnet18", 3, 8)],
)
def test_all_parameters_equal_the_loop_on_the_zoo(name, channels, size):
    model = warmed(name, channels, size)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.running_var.sub(1).abs().max() > 0.1 for m in bn)  # the stats matter
    x, y = batch(channels, size, n=3)
    exact = per_example_grad_norms(model, x, y, chunk_size=2)
    assert exact.dtype == torch.float64 and exact.shape == (3,)
    assert max_rel_err(exact, loop_norms(model, x, y)) < 1e-9


def test_float32_model_gives_float32_close_to_the_float64_loop():
    model = warmed("cnn", 3, 16, dtype=torch.float32, width=16)
    x, y = batch(3, 16)
    exact = per_example_grad_norms(model, x, y)
    assert exact.dtype == torch.float32
    assert max_rel_err(exact, loop_norms(model.double(), x, y)) < 1e-4


class Odd(nn.Module):
    """Convs with stride, padding (also "same" with an even kernel, and reflect), dilation,
    groups, bias or none; a frozen layer; a Linear on [B, T, in]; BatchNorm1d; a layer
    whose output never reaches the loss; in-place ReLUs, one on an output that is a view."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 20, 3, stride=2, padding=1, bias=True)
        self.b = nn.Conv2d(20, 24, 3, padding=2, dilation=2, bias=True)
        self.c = nn.Conv2d(24, 24, (2, 4), padding="same", dilation=(1, 2), groups=4)
        self.d = nn.Conv2d(24, 32, 3, stride=2, padding=1, padding_mode="reflect")
        self.e = nn.Conv2d(32, 8, 1, bias=False)
        self.frozen = nn.Conv2d(8, 8, 1).requires_grad_(False)
        self.unused = nn.Linear(8, 3)
        self.tokens = nn.Linear(9, 6)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8 * 6, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.c(self.relu(self.b(self.relu(self.a(x)))))
        x = self.frozen(self.e(self.relu(self.d(x))))
        self.unused(x.mean(dim=(2, 3)))
        t = self.relu(self.tokens(x.flatten(2)))  # [B, 8, 9] -> [B, 8, 6], a view
        return self.head(self.relu(self.bn(t)).flatten(1))


@pytest.fixture(scope="module")
def odd():
    """The model, a batch, and the loop's norms on it (computed once: the loop is the slow part)."""
    torch.manual_seed(0)
    model = Odd().double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
    x = torch.randn(5, 3, 10, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    return model, x, y, loop_norms(model, x, y)


def test_the_odd_model_has_gradients_everywhere_but_where_it_should_not(odd):
    model, x, y, _ = odd
    model = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        if name.startswith(("frozen", "unused")):
            assert p.grad is None, name
        else:
            assert p.grad.abs().max() > 1e-3, name


@pytest.mark.parametrize("one_example_pieces", [False, True])
@pytest.mark.parametrize("strategy", ["chosen", "ghost", "matmul", "grouped-kernel"])
def test_every_conv_and_linear_strategy_equals_the_loop(
    odd, strategy, one_example_pieces, monkeypatch
):
    if one_example_pieces:
        monkeypatch.setattr(grad_norms, "PIECE_ELEMENTS", 1)
    if strategy != "chosen":
        monkeypatch.setattr(grad_norms, "_uses_ghost", lambda *_: strategy == "ghost")
        threshold = 1 if strategy == "grouped-kernel" else 10**9
        monkeypatch.setattr(grad_norms, "GROUPED_MIN_CHANNELS", threshold)
    model, x, y, reference = odd
    exact = per_example_grad_norms(model, x, y, chunk_size=2)
    assert max_rel_err(exact, reference) < 1e-9


def test_input_that_requires_grad_is_left_alone(odd):
    model, x, y, reference = odd
    x = x.clone().requires_grad_()
    exact = per_example_grad_norms(model, x, y)
    assert x.grad is None
    assert max_rel_err(exact, reference) < 1e-9


def test_last_layer_equals_autograd_of_the_head():
    model = warmed("cnn", 3, 16, width=8)
    x, y = batch(3, 16)
    closed = per_example_grad_norms(model, x, y, params="last_layer")
    reference = loop_norms(model, x, y, only=lambda m: [m.head.weight, m.head.bias])
    assert max_rel_err(closed, reference) < 1e-10


@pytest.mark.parametrize("params", ["all", "last_layer"])
def test_chunking_changes_nothing(params):
    model = warmed("cnn", 3, 16, width=8)
    x, y = batch(3, 16, n=7)
    results = [per_example_grad_norms(model, x, y, params=params, chunk_size=c) for c in (1, 3, 7)]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-12, atol=0)


def test_modes_grads_and_running_stats_are_left_as_they_were():
    model = warmed("cnn", 3, 8, width=8)
    model.train()
    model.body[1].eval()  # a mixed state must come back as it was, not as all-train
    modes = {name: m.training for name, m in model.named_modules()}
    x, y = batch(3, 8, n=3)
    F.cross_entropy(model(x), y).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.head.bias.grad = None
    state = copy.deepcopy(model.state_dict())
    for params in ("all", "last_layer"):
        per_example_grad_norms(model, x, y, params=params)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.head.bias.grad is None
    for name, p in model.named_parameters():
        if name != "head.bias":
            assert torch.equal(p.grad, grads[name]), name
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_empty_batch_gives_an_empty_result():
    model = warmed("mlp", 1, 8)
    x, y = batch(1, 8)
    assert per_example_grad_norms(model, x[:0], y[:0]).shape == (0,)


def test_a_model_without_trainable_parameters_has_zero_gradients():
    model = warmed("mlp", 1, 8).requires_grad_(False)
    x, y = batch(1, 8)
    assert torch.equal(per_example_grad_norms(model, x, y), torch.zeros(6, dtype=torch.float64))


def test_bad_arguments_are_named():
    model = warmed("mlp", 1, 8)
    x, y = batch(1, 8)
    with pytest.raises(ValueError, match=r"params='bias' is not one of all, last_layer"):
        per_example_grad_norms(model, x, y, params="bias")
    with pytest.raises(ValueError, match="chunk_size=0"):
        per_example_grad_norms(model, x, y, chunk_size=0)


class Gained(nn.Linear):
    """A Linear subclass with its own forward and an extra parameter: replayed."""

    def __init__(self, features=4):
        super().__init__(features, features)
        self.gain = nn.Parameter(torch.rand(features, 1) + 0.5)

    def forward(self, x):
        return F.linear(x, self.weight * self.gain, self.bias)


class Tokens(nn.Module):
    """What ViTs and ConvNeXts use besides Linear and Conv2d: a class token and position
    embeddings added outside any layer, LayerNorm on tokens, a layer scale, GroupNorm, a
    depthwise conv, a layer subclass with its own forward, a Linear applied to a parameter
    only (a learned query: its gradient never reaches the input), an output that is a view."""

    def __init__(self, dim=6):
        super().__init__()
        self.embed = nn.Conv2d(3, dim // 2, 2, stride=2)
        self.depthwise = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, groups=dim // 2)
        # depthwise with a channel multiplier, stride, dilation and "same" padding
        self.spread = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=2, dilation=2, groups=dim // 2)
        self.same = nn.Conv2d(dim, dim, (2, 3), padding="same", groups=dim, bias=False)
        self.group = nn.GroupNorm(2, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.norm = nn.LayerNorm(dim)
        self.mix = Gained(dim)
        self.scale = nn.Parameter(torch.rand(dim) + 0.5)
        self.query = nn.Parameter(torch.randn(1, dim))
        self.ask = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        t = self.same(self.spread(self.depthwise(self.embed(x))))  # [B, dim, 2, 2]
        t = self.group(t).flatten(2).transpose(1, 2)  # [B, 4, dim]
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        t = t + self.scale * self.mix(self.norm(t))
        t = t + self.ask(self.query.expand(x.shape[0], -1)).unsqueeze(1)
        return self.head(t[:, 0])


def test_tokens_norms_and_loose_parameters_equal_the_loop():
    torch.manual_seed(0)
    model = Tokens().double()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2)
        model.group.bias.uniform_(-1, 1)
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    reference = loop_norms(model, x, y)
    for chunk in (2, 5):
        exact = per_example_grad_norms(model, x, y, chunk_size=chunk)
        assert max_rel_err(exact, reference) < 1e-9


def test_every_parameter_is_covered_exactly_once():
    model = Tokens().double()
    plan = trace(model, torch.randn(1, 3, 8, 8, dtype=torch.float64))
    closed = [p for m in plan.layers for p in m.parameters(recurse=False)]
    replayed = [p for site in plan.sites.values() for p in site.params.values()]
    assert sum(p.numel() for p in closed + replayed) == sum(p.numel() for p in model.parameters())
    assert len({id(p) for p in closed + replayed}) == len(list(model.parameters()))
    assert {plan.names[m] for m in plan.sites} == {"Tokens", "mix"}
    assert set(plan.sites[model].params) == {"cls", "pos", "scale", "query"}


class Outside(nn.Module):
    """Uses its layer's bias outside the layer's forward, and inside it too."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x + self.lin.bias)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


class Unbatched(nn.Module):
    """A Linear applied to a parameter without the batch: its output gradient sums them."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 4))
        self.ask = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.ask(self.query)


class DataDependent(nn.Module):
    """A scale read out of the data with .item(): no per-example replay exists."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.scale * float(x.abs().max().item())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)), "running"),
        (Shared(), "'lin' \\(Linear\\) runs more than once"),
        (Outside(), "'lin.bias' is used in the forward of Outside, lin"),
        (Tied(), "'b.weight' is shared with 'a.weight'"),
        (Unbatched(), "layer 'ask' \\(Linear\\) gets an input without the batch dimension"),
        (nn.Sequential(nn.Linear(4, 4), DataDependent()), "'1' \\(DataDependent\\) could not be"),
    ],
)
def test_what_the_closed_forms_do_not_cover_is_refused_with_the_alternative(model, message):
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(NotImplementedError, match=message) as err:
        per_example_grad_norms(model, x, y)
    assert "method.params=last_layer" in str(err.value)


def test_a_layer_subclass_with_its_own_forward_is_replayed_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(Gained(), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    assert max_rel_err(per_example_grad_norms(model, x, y), loop_norms(model, x, y)) < 1e-9


TINY_VIT = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 2, "depth": 2}}
TINY_CONVNEXT = {
    "arch": "convnext_atto",
    "kwargs": {"patch_size": 1, "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]},
}


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("timm", {"arch": "resnet18"}),
        ("timm", TINY_VIT),
        ("timm", {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"], "init_values": 0.1}}),
        ("timm", TINY_CONVNEXT),
        ("timm", {**TINY_CONVNEXT, "kwargs": {**TINY_CONVNEXT["kwargs"], "conv_mlp": False}}),
        ("torchvision", {"arch": "resnet18"}),
        ("torchvision", {"arch": "mobilenet_v3_small"}),
    ],
)
def test_library_models_equal_the_loop(name, options):
    model = warmed(name, 1, 8, **options)
    with torch.no_grad():  # off the initialisation (zero layer scales, unit norms)
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.05)
    x, y = batch(1, 8, n=3)
    exact = per_example_grad_norms(model, x, y, chunk_size=2)
    assert max_rel_err(exact, loop_norms(model, x, y)) < 1e-9


class Encoder(nn.Module):
    """A transformer encoder over 4 tokens, its tokens laid out [B, T, D] or, as
    nn.Transformer's default batch_first=False, [T, B, D]."""

    def __init__(self, batch_first, tokens=4, dim=6, classes=3):
        super().__init__()
        self.tokens, self.batch_first = tokens, batch_first
        self.embed = nn.Linear(2, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 8, dropout=0.0, batch_first=batch_first)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x.reshape(x.shape[0], self.tokens, -1))
        if self.batch_first:
            return self.head(self.encoder(t).mean(dim=1))
        return self.head(self.encoder(t.transpose(0, 1)).mean(dim=0))


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_a_sequence_first_transformer_is_refused_even_when_the_chunk_equals_the_tokens():
    torch.manual_seed(0)
    x, y = torch.randn(8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    first = Encoder(batch_first=True).double()
    exact = per_example_grad_norms(first, x, y, chunk_size=8)
    assert max_rel_err(exact, loop_norms(first, x, y)) < 1e-9
    second = Encoder(batch_first=False).double()
    second.load_state_dict(first.state_dict())  # the same function, another layout
    for chunk in (4, 8):  # 4: the chunk's first dimension is the 4 tokens, as a batch's would be
        with pytest.raises(NotImplementedError, match=r"batch in dimension 1 \(\[4, B, 6\]\)"):
            per_example_grad_norms(second, x, y, chunk_size=chunk)
