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
- BatchNorm (eval, running statistics): weight sum_s g_i x_hat_i, bias sum_s g_i.
Every parameter must be a `weight` or `bias` of one of these layers, used by the layer's
own forward, once per pass; anything else raises NotImplementedError rather than leaving
parameters out of the norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PARAMS = ("all", "last_layer")
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LAYERS = (nn.Linear, nn.Conv2d, *BATCHNORMS)
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
    if params == "all":
        _check_layers(model)
        norms_of = _all_parameters
    else:
        _check_head(model)
        norms_of = _last_layer
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
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


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _check_layers(model: nn.Module) -> None:
    """Fail before any work on parameters the closed forms do not cover."""
    for name, module in model.named_modules():
        if not _trainable(module):
            continue
        kind = type(module).__name__
        base = next((t for t in LAYERS if isinstance(module, t)), None)
        # a subclass with its own forward (weight standardisation, say) or extra
        # parameters (old-style weight norm) computes something the closed forms do not
        own = {n for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        if base is None or type(module).forward is not base.forward or own - {"weight", "bias"}:
            raise NotImplementedError(
                f"exact per-example gradient norms cover the weight and bias of "
                f"{', '.join(t.__name__ for t in LAYERS)}; module {name!r} ({kind}) "
                f"has trainable parameters {', '.join(sorted(own))}"
            )
        if isinstance(module, BATCHNORMS) and module.running_mean is None:
            raise NotImplementedError(
                f"module {name!r} ({kind}) keeps no running statistics: its batch "
                "statistics couple the examples, so per-example gradients are not defined"
            )


def _all_parameters(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    layers = [m for m in model.modules() if _trainable(m)]
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    if not layers:
        return total
    inputs: dict[nn.Module, torch.Tensor] = {}
    leaves: list[torch.Tensor] = []

    def leaf_input(module: nn.Module, args: tuple[torch.Tensor, ...]):
        # a layer fed from outside the graph gets a leaf input that the backward is asked
        # for, so that the backward runs through every layer without weight gradients
        if args[0].requires_grad:
            return None
        leaves.append(args[0].detach().requires_grad_())
        return (leaves[-1], *args[1:])

    def record(
        module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor | None:
        if module in inputs:
            raise NotImplementedError(
                f"{type(module).__name__} runs more than once per forward pass: the norm of "
                "a shared parameter's gradient does not split into per-call parts"
            )
        inputs[module] = args[0].detach()
        # a tensor hook gets the gradient of the output as it is now, also when a later
        # in-place op (ReLU(inplace=True)) rewrites it, so the output needs no copy; but
        # not for a view (Linear on [B, T, in]), whose rewrite bypasses the hooked node
        output.register_hook(lambda grad: accumulate(module, grad))
        return output.clone() if output._is_view() else None

    def accumulate(module: nn.Module, grad: torch.Tensor) -> None:
        # runs inside the backward, so each layer's input is released as soon as it is used
        total.add_(_squared_norms(module, inputs.pop(module), grad))

    handles = [m.register_forward_pre_hook(leaf_input) for m in layers]
    handles += [m.register_forward_hook(record) for m in layers]
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x.detach()), y, reduction="sum")
    finally:
        for handle in handles:
            handle.remove()
    idle = sorted({type(m).__name__ for m in layers if m not in inputs})
    if idle:
        raise NotImplementedError(
            f"{', '.join(idle)} with trainable parameters did not run their forward: "
            "parameters used outside their module's forward are not covered"
        )
    if not leaves:  # the first layer's input already needs grad: a parameter outside layers
        raise NotImplementedError(
            "every layer's input depends on parameters used outside their module's forward"
        )
    # a layer whose hook never fires has an output that does not reach the loss: zero
    torch.autograd.grad(loss, leaves, allow_unused=True)
    return total.sqrt().to(loss.dtype)


def _squared_norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return _linear(module, a, g)
    if isinstance(module, nn.Conv2d):
        return _conv2d(module, a, g)
    return _batchnorm(module, a, g)


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
    if isinstance(module.padding, str):  # "valid", or "same": any odd one out on the right
        span_h, span_w = (dh * (kh - 1), dw * (kw - 1)) if module.padding == "same" else (0, 0)
        pads = (span_w // 2, span_w - span_w // 2, span_h // 2, span_h - span_h // 2)
    else:
        pads = (module.padding[1],) * 2 + (module.padding[0],) * 2
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
