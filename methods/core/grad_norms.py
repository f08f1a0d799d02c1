"""Exact per-example gradient norms (GraNd) without materialising B x P gradients.

One forward pass records each parameterised layer's input; one backward of the summed
per-example losses hands each layer its output gradient, whose slice i is example i's own
(eval-mode BatchNorm makes examples independent). The backward asks for no weight
gradient at all: from input and output gradient, each layer's per-example squared
gradient norm has a closed form, taken as the backward passes the layer:
- Linear on [B, in]: ||g_i||^2 ||a_i||^2 for the weight, ||g_i||^2 for the bias; on
  [B, ..., in] the weight gradient is G_i^T A_i over the positions, as for a convolution;
- Conv2d (any stride, padding, dilation, groups): the weight gradient is G_i U_i^T with
  U_i the unfolded input [C k k, L] and G_i the output gradient [O, L]; its squared
  Frobenius norm comes directly (a batched matmul, or the convolution weight-gradient
  kernel with the examples as groups) or, where that costs fewer flops, from the "ghost"
  identity sum_{l,l'} (U_i^T U_i)_{ll'} (G_i^T G_i)_{ll'}; bias ||sum_l G_i[:, l]||^2;
  depthwise ones as one correlation of each (example, channel) with its output gradient;
- BatchNorm (eval, running statistics), LayerNorm (over tokens or channels, timm's and
  torchvision's 2d forms included) and GroupNorm: weight sum_s g_i x_hat_i, bias sum_s g_i.
Any other parameter (class token, position embeddings, layer scale, a layer subclass with
its own forward) is covered by replaying its one site per example
(`methods.core.grad_norm_replay`); a plan traced on one example (`methods.core.grad_norm_plan`)
assigns every trainable parameter to exactly one of these and refuses, naming it, what
none covers, rather than leaving parameters out of the norm. A hooked tensor that the
backward to the inputs does not reach (it depends on parameters only) gets a second
backward of its own, so that no part of a norm is missed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import tree_flatten, tree_unflatten

from methods.core.grad_norm_plan import LAST_LAYER, Plan, norm_dim, trace
from methods.core.grad_norm_replay import Recorded, SiteCall, replay_sq_norms

PARAMS = ("all", "last_layer")
# per-example temporaries (unfolded inputs, weight gradients, Gram matrices) are made
# for pieces of a chunk holding at most this many elements
PIECE_ELEMENTS = 1 << 23
# measured on CPU: the grouped weight-gradient kernel beats unfold + bmm (1.3-4x) from
# ~16 input channels on; on a 3-channel stem it is slower, with two threads 10x slower
GROUPED_MIN_CHANNELS = 16


def per_example_grad_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    params: str = "all",
    chunk_size: int = 128,
) -> torch.Tensor:
    """||d CE(f(x_i), y_i) / d w||_2 per example [B], the model in eval mode.

    `params="all"`: exact over every parameter that requires grad; `"last_layer"`: over
    `model.head` only, in closed form from `model.features` (DeepCore's variant). At most
    `chunk_size` examples are in flight at once. The modules' train/eval modes, the
    parameters' `.grad` and the buffers (BatchNorm running statistics) are left as they were.
    """
    if params not in PARAMS:
        raise ValueError(f"params={params!r} is not one of {', '.join(PARAMS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if params == "last_layer":
        _check_head(model)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        if params == "all":
            plan = trace(model, x[:1]) if x.shape[0] else None
            norms_of = partial(_all_parameters, plan=plan)
        else:
            norms_of = _last_layer
        norms = [
            norms_of(model, x[i : i + chunk_size], y[i : i + chunk_size])
            for i in range(0, x.shape[0], chunk_size)
        ]
    finally:
        for module, training in modes.items():
            module.training = training
    return torch.cat(norms) if norms else torch.empty(0, device=x.device)


def _check_head(model: nn.Module) -> None:
    if not isinstance(getattr(model, "head", None), nn.Linear) or not hasattr(model, "features"):
        raise TypeError("params='last_layer' needs a model with `features(x)` and a Linear `head`")


def _last_layer(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed form over the head: ||softmax(z) - onehot(y)|| * sqrt(||h||^2 + 1)."""
    with torch.no_grad():
        h = model.features(x)
        probs = model.head(h).softmax(dim=1)
        err = probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)
        return err.norm(dim=1) * (h.pow(2).sum(dim=1) + 1).sqrt()


class _Pass:
    """Hooks of one pass over a chunk: layers get their closed forms as the backward
    reaches them, sites their replay once every gradient they need has come."""

    def __init__(self, plan: Plan, total: torch.Tensor) -> None:
        self.plan, self.total, self.batch = plan, total, total.shape[0]
        self.layers = set(plan.layers)
        self.stack: list[nn.Module] = []
        self.inputs: dict[nn.Module, torch.Tensor] = {}
        self.calls: dict[nn.Module, SiteCall] = {}
        self.callee_of: dict[nn.Module, SiteCall] = {}
        self.leaves: list[torch.Tensor] = []
        self.edges: list[Any] = []  # every hooked tensor's gradient edge, by key
        self.hooks: list[Any] = []  # their hooks' handles
        self.fired: set[int] = set()

    def attach(self, model: nn.Module) -> list[Any]:
        modules = list(self.plan.names)
        handles = [m.register_forward_pre_hook(self.pre, with_kwargs=True) for m in modules]
        return handles + [m.register_forward_hook(self.post, with_kwargs=True) for m in modules]

    def hook(self, tensor: torch.Tensor, fn) -> None:
        """`fn(grad)` once, however many backward passes reach `tensor`."""
        key = len(self.edges)
        self.edges.append(get_gradient_edge(tensor))

        def once(grad: torch.Tensor) -> None:
            if key not in self.fired:
                self.fired.add(key)
                fn(grad)

        self.hooks.append(tensor.register_hook(once))

    def leaf(self, t: Any) -> Any:
        # a layer or site fed from outside the graph gets a leaf input that the backward is
        # asked for, so that the backward runs through it without weight gradients
        if not isinstance(t, torch.Tensor) or t.requires_grad or not t.is_floating_point():
            return t
        self.leaves.append(t.detach().requires_grad_())
        return self.leaves[-1]

    def pre(self, module, args, kwargs):
        parent = self.stack[-1] if self.stack else None
        self.stack.append(module)
        args = list(args)
        if parent in self.calls and module in self.plan.sites[parent].callees:
            self._callee_inputs(module, parent, args)
        if module in self.layers:
            if module in self.inputs:
                raise NotImplementedError(f"{self.plan.names[module]!r} ran twice in one pass")
            args[0] = self.leaf(args[0])
            if self.batch > 1 and (args[0].dim() == 0 or args[0].shape[0] != self.batch):
                raise NotImplementedError(
                    f"layer {self.plan.names[module]!r} gets an input without the batch "
                    f"dimension, so its output gradient sums the examples; {LAST_LAYER}"
                )
            self.inputs[module] = args[0].detach()
        elif module in self.plan.sites:
            args = [self.leaf(a) for a in args]
            self.calls[module] = SiteCall(args=Recorded.of(args, self.batch), kwargs=kwargs)
        return tuple(args), kwargs

    def _callee_inputs(self, module: nn.Module, parent: nn.Module, args: list) -> None:
        call, site = self.calls[parent], self.plan.sites[parent]
        k = call.next_callee
        call.next_callee += 1
        if k >= len(site.callees) or site.callees[k] is not module:
            raise NotImplementedError(
                f"{self.plan.names[module]!r} is called in another order than when traced"
            )
        self.callee_of[module] = call
        positions: list[int] = []
        call.callee_in_pos.append(positions)
        call.grad_in.append([])
        if not site.grad_in[k]:
            return
        for j, a in enumerate(args):
            if isinstance(a, torch.Tensor) and a.requires_grad:
                # a copy of its own, so that its gradient is the one through this callee
                args[j] = a.clone()
                positions.append(j)
                call.grad_in[k].append(None)
                call.pending += 1
                self.hook(args[j], partial(self._grad_in, parent, k, len(positions) - 1))

    def post(self, module, args, kwargs, output):
        self.stack.pop()
        if module in self.layers:
            output = self._layer_output(module, output)
        elif module in self.plan.sites:
            output = self._site_output(module, output)
        if module in self.callee_of:
            call = self.callee_of.pop(module)
            call.callee_out.append(Recorded.of(output, self.batch))
        return output

    def _layer_output(self, module, output: torch.Tensor) -> torch.Tensor:
        # a tensor hook gets the gradient of the output as it is now, also when a later
        # in-place op (ReLU(inplace=True)) rewrites it, so the output needs no copy; but
        # not for a view (Linear on [B, T, in]), whose rewrite bypasses the hooked node
        output = output.clone() if output._is_view() else output
        self.hook(output, partial(self._accumulate, module))
        return output

    def _site_output(self, module, output: Any) -> Any:
        call = self.calls[module]
        leaves, spec = tree_flatten(output)
        for i, t in enumerate(leaves):
            if not isinstance(t, torch.Tensor):
                continue
            call.output_keep.append(t.requires_grad)
            if not t.requires_grad:
                continue
            leaves[i] = t = t.clone() if t._is_view() else t
            call.outputs.append(t)
            call.grad_out.append(None)
            call.pending += 1
            self.hook(t, partial(self._grad_out, module, len(call.outputs) - 1))
        return tree_unflatten(leaves, spec)

    def _accumulate(self, module: nn.Module, grad: torch.Tensor) -> None:
        # runs inside the backward, so each layer's input is released as soon as it is used
        self.total.add_(_squared_norms(module, self.inputs.pop(module), grad))

    def _grad_out(self, module: nn.Module, i: int, grad: torch.Tensor) -> None:
        call = self.calls[module]
        call.grad_out[i] = grad
        self._arrived(module, call)

    def _grad_in(self, module: nn.Module, k: int, i: int, grad: torch.Tensor) -> None:
        call = self.calls[module]
        call.grad_in[k][i] = grad
        self._arrived(module, call)

    def _arrived(self, module: nn.Module, call: SiteCall) -> None:
        call.pending -= 1
        if call.pending == 0:
            self._replay(module, call)

    def _replay(self, module: nn.Module, call: SiteCall) -> None:
        if call.done:
            return
        call.done = True
        if any(g is not None for g in call.grad_out) or any(
            g is not None for gs in call.grad_in for g in gs
        ):
            site, name = self.plan.sites[module], self.plan.names[module]
            self.total.add_(replay_sq_norms(module, site, call, name, PIECE_ELEMENTS).double())
        del self.calls[module]

    def backward(self, loss: torch.Tensor) -> None:
        """The backward to the leaves; then to any hooked tensor it did not reach (one
        that depends on parameters only), so that no part of a norm is missed."""
        if self.leaves:
            torch.autograd.grad(loss, self.leaves, allow_unused=True, retain_graph=True)
        missed = [e for key, e in enumerate(self.edges) if key not in self.fired]
        if missed:
            torch.autograd.grad(loss, missed, allow_unused=True)
        for module, call in list(self.calls.items()):  # gradients that never came are zero
            self._replay(module, call)

    def release(self) -> None:
        """Drop the hooks and what the pass holds of the graph. A hook's closure reaches
        the pass, which reaches the graph's nodes through its edges: a cycle through
        autograd's C++ nodes that Python's collector cannot see, so without this every
        chunk's graph (its saved activations) would stay in memory for good."""
        for handle in self.hooks:
            handle.remove()
        for held in (self.hooks, self.edges, self.leaves, self.stack, self.inputs, self.calls):
            held.clear()
        self.callee_of.clear()


def _all_parameters(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> torch.Tensor:
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    if not plan.layers and not plan.sites:
        return total
    state = _Pass(plan, total)
    handles = state.attach(model)
    try:
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(model(x.detach()), y, reduction="sum")
        finally:  # before the backward, whose replays rerun sites' forwards
            for handle in handles:
                handle.remove()
        if loss.requires_grad:
            state.backward(loss)
    finally:
        state.release()
    return total.sqrt().to(loss.dtype)


def _squared_norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return _linear(module, a, g)
    if isinstance(module, nn.Conv2d):
        return _conv2d(module, a, g)
    if isinstance(module, nn.LayerNorm):
        return _layernorm(module, a, g)
    if isinstance(module, nn.GroupNorm):
        return _groupnorm(module, a, g)
    return _batchnorm(module, a, g)


def _affine_sq_norms(module: nn.Module, x_hat, g: torch.Tensor, dims) -> torch.Tensor:
    """Weight sum g x_hat and bias sum g over the positions `dims`, per example."""
    out = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
    if module.weight is not None and module.weight.requires_grad:
        out += (g * x_hat()).sum(dim=dims).flatten(1).pow(2).sum(dim=1)
    if module.bias is not None and module.bias.requires_grad:
        out += g.sum(dim=dims).flatten(1).pow(2).sum(dim=1)
    return out


def _layernorm(module: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Positions [B, T, n] with the n normalised elements last (tokens, channels-last maps)."""
    dim = norm_dim(module)
    if dim != -1:
        a, g = a.movedim(dim, -1), g.movedim(dim, -1)
    n = module.weight.numel() if module.weight is not None else module.bias.numel()
    a, g = a.reshape(a.shape[0], -1, n), g.reshape(g.shape[0], -1, n)
    return _affine_sq_norms(module, lambda: F.layer_norm(a, (n,), eps=module.eps), g, 1)


def _groupnorm(module: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    a, g = a.reshape(*a.shape[:2], -1), g.reshape(*g.shape[:2], -1)
    x_hat = lambda: F.group_norm(a, module.num_groups, eps=module.eps)  # noqa: E731
    return _affine_sq_norms(module, x_hat, g, 2)


def _linear(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    b = a.shape[0]
    out = torch.zeros(b, dtype=g.dtype, device=g.device)
    has_bias = module.bias is not None and module.bias.requires_grad
    if a.dim() == 2:
        grad_sq = g.pow(2).sum(dim=1)
        if module.weight.requires_grad:
            out += grad_sq * a.pow(2).sum(dim=1)
        return out + grad_sq if has_bias else out
    a = a.reshape(b, -1, a.shape[-1]).transpose(1, 2)  # [B, in, T]
    g = g.reshape(b, -1, g.shape[-1]).transpose(1, 2)  # [B, out, T]
    if module.weight.requires_grad:
        out += _product_sq_norms(a, g)
    return out + g.sum(dim=2).pow(2).sum(dim=1) if has_bias else out


def _uses_ghost(positions: int, k: int, o: int) -> bool:
    """Two [L, L] Gram matrices, L^2 (K + O) flops, against the [O, K] product, L O K."""
    return positions * (k + o) < k * o


def _product_sq_norms(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """||G_i U_i^T||_F^2 for U [B, K, L] and G [B, O, L], whichever way costs less."""
    b, k, positions = u.shape
    o = g.shape[1]
    ghost = _uses_ghost(positions, k, o)
    piece = max(1, PIECE_ELEMENTS // (2 * positions * positions if ghost else o * k))
    out = []
    for s in range(0, b, piece):
        us, gs = u[s : s + piece], g[s : s + piece]
        if ghost:
            grams = (us.transpose(1, 2) @ us).mul_(gs.transpose(1, 2) @ gs)
            out.append(grams.sum(dim=(1, 2)))
        else:
            out.append((gs @ us.transpose(1, 2)).pow_(2).sum(dim=(1, 2)))
    return torch.cat(out)


def _conv2d(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    b = a.shape[0]
    out = torch.zeros(b, dtype=g.dtype, device=g.device)
    if module.bias is not None and module.bias.requires_grad:
        out += g.sum(dim=(2, 3)).pow(2).sum(dim=1)
    if not module.weight.requires_grad:
        return out
    groups = module.groups
    if groups > 1 and groups == module.in_channels and module.padding_mode == "zeros":
        return out + _depthwise_sq_norms(module, a, g)
    k = module.weight[0].numel()  # C / groups * kh * kw
    o = module.out_channels // groups
    positions = g.shape[2] * g.shape[3]
    if groups == 1 and not _uses_ghost(positions, k, o) and _grouped_kernel_applies(module, a):
        piece = max(1, PIECE_ELEMENTS // (o * k))
        for s in range(0, b, piece):
            out[s : s + piece] += _grouped_kernel_sq_norms(
                module, a[s : s + piece], g[s : s + piece]
            )
        return out
    piece = max(1, PIECE_ELEMENTS // (groups * k * positions))
    for s in range(0, b, piece):
        u = _unfold(module, a[s : s + piece])  # [p, C k k, L]
        p = u.shape[0]
        sq = _product_sq_norms(
            u.reshape(p * groups, k, positions),
            g[s : s + piece].reshape(p * groups, o, positions),
        )
        out[s : s + piece] += sq.view(p, groups).sum(dim=1)
    return out


def _depthwise_sq_norms(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Depthwise (each filter sees one channel): the weight gradient of example i and
    channel c is the correlation of its padded input with its output gradient, one
    convolution with every (example, channel) its own group, the output gradient as the
    kernel (dilated by the stride), stepping by the dilation; measured on CPU 4-14x faster
    than unfolding or the grouped weight-gradient kernel."""
    b, c = a.shape[:2]
    o = g.shape[1]
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    a = F.pad(a, _pads(module)) if any(_pads(module)) else a
    piece = max(1, PIECE_ELEMENTS // (c * a.shape[2] * a.shape[3]))
    out = []
    for s in range(0, b, piece):
        p = a[s : s + piece].shape[0]
        grads = F.conv2d(
            a[s : s + piece].reshape(1, p * c, *a.shape[2:]),
            g[s : s + piece].reshape(p * o, 1, *g.shape[2:]),
            stride=(dh, dw),
            dilation=(sh, sw),
            groups=p * c,
        )[..., :kh, :kw]
        out.append(grads.reshape(p, -1).pow(2).sum(dim=1))
    return torch.cat(out)


def _pads(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for the layer's padding; for "same", any odd
    one out on the right, as torch pads."""
    (kh, kw), (dh, dw) = module.kernel_size, module.dilation
    if isinstance(module.padding, str):  # "valid", or "same"
        span_h, span_w = (dh * (kh - 1), dw * (kw - 1)) if module.padding == "same" else (0, 0)
        return (span_w // 2, span_w - span_w // 2, span_h // 2, span_h - span_h // 2)
    return (module.padding[1],) * 2 + (module.padding[0],) * 2


def _grouped_kernel_applies(module: nn.Conv2d, a: torch.Tensor) -> bool:
    return (
        a.shape[1] >= GROUPED_MIN_CHANNELS
        and module.kernel_size != (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _grouped_kernel_sq_norms(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The batch folded into groups, so that one weight-gradient kernel (about as fast as
    the batch's own weight gradient) computes every example's, without unfolding."""
    p, c, h, w = a.shape
    o = g.shape[1]
    grads = torch.nn.grad.conv2d_weight(
        a.reshape(1, p * c, h, w),
        (p * o, c, *module.kernel_size),
        g.reshape(1, p * o, *g.shape[2:]),
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=p,
    )
    return grads.view(p, -1).pow_(2).sum(dim=1)


def _unfold(module: nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """[B, C k k, L] like F.unfold, from strided views: CPU im2col was 1.6-5x slower."""
    (kh, kw), (dh, dw), (sh, sw) = module.kernel_size, module.dilation, module.stride
    pads = _pads(module)
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        a = F.pad(a, pads, mode=mode)
    windows = a.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    windows = windows[..., ::dh, ::dw]  # [B, C, Ho, Wo, kh, kw]
    b, c, ho, wo = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(b, c * kh * kw, ho * wo)


def _batchnorm(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each example's channels taken as the channels of a batch of one: the eval-mode
    batch-norm backward kernel then gives sum_s g (a - mean) / std and sum_s g per example
    and channel in one pass over g and a."""
    b, c = a.shape[:2]
    weight, bias = module.weight, module.bias
    _, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
        g.reshape(1, b * c, -1),
        a.reshape(1, b * c, -1),
        None,
        module.running_mean.repeat(b),
        module.running_var.repeat(b),
        None,
        None,
        False,
        module.eps,
        [
            False,
            weight is not None and weight.requires_grad,
            bias is not None and bias.requires_grad,
        ],
    )
    out = torch.zeros(b, dtype=g.dtype, device=g.device)
    for grad in (grad_weight, grad_bias):
        if grad is not None:
            out += grad.view(b, c).pow(2).sum(dim=1)
    return out
