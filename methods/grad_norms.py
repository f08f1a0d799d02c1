"""Exact per-example gradient norms (GraNd) without materialising B x P gradients.

One forward pass records each parameterised layer's input and output; one backward of
the summed per-example losses gives each layer's output gradient, whose slice i is
example i's own (eval-mode BatchNorm makes examples independent). From input and
output gradient, each layer's per-example squared gradient norm has a closed form:
- Linear: ||g_i||^2 ||a_i||^2 for the weight, ||g_i||^2 for the bias;
- Conv2d: ||G_i U_i^T||_F^2 with U_i the unfolded input, computed either directly or,
  where cheaper, by the "ghost" identity sum_{l,l'} (U_i^T U_i)_{ll'} (G_i^T G_i)_{ll'};
- BatchNorm (eval): weight sum_hw g_i x_hat_i, bias sum_hw g_i, per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PARAMS = ("all", "last_layer")
SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
PIECE_ELEMENTS = 1 << 23
# below this many input channels the grouped weight-gradient kernel is slow (measured on
# CPU: 27x slower than unfold + bmm for a 3-channel stem); unfold is small there anyway
GROUPED_MIN_CHANNELS = 16


def per_example_grad_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    params: str = "all",
    chunk_size: int = 128,
) -> torch.Tensor:
    """||d CE(f(x_i), y_i) / d w||_2 per example, the model in eval mode, in chunks."""
    if params not in PARAMS:
        raise ValueError(f"params={params!r} is not one of {', '.join(PARAMS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    was_training = model.training
    model.eval()
    try:
        norms = [
            (_last_layer if params == "last_layer" else _all_parameters)(
                model, x[i : i + chunk_size], y[i : i + chunk_size]
            )
            for i in range(0, x.shape[0], chunk_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(norms) if norms else torch.empty(0, device=x.device)


def _last_layer(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed form over the head: ||softmax(z) - onehot(y)|| * sqrt(||h||^2 + 1)."""
    with torch.no_grad():
        h = model.features(x)
        probs = model.head(h).softmax(dim=1)
        err = probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)
        return err.norm(dim=1) * (h.pow(2).sum(dim=1) + 1).sqrt()


def _all_parameters(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    layers = [m for m in model.modules() if _trainable(m)]
    unsupported = sorted({type(m).__name__ for m in layers if not isinstance(m, SUPPORTED)})
    if unsupported:
        raise NotImplementedError(
            f"exact per-example gradient norms do not cover {', '.join(unsupported)} layers"
        )
    records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        records[module] = (inputs[0].detach(), output)
        return output.clone()  # a following in-place op must not overwrite what we differentiate

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y, reduction="sum")
            outputs = [records[m][1] for m in layers]
            grads = torch.autograd.grad(loss, outputs)
    finally:
        for handle in handles:
            handle.remove()
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for module, grad in zip(layers, grads, strict=True):
        total += _squared_norms(module, records[module][0], grad.detach()).double()
    return total.sqrt().to(grads[-1].dtype)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _squared_norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return _linear(module, a, g)
    if isinstance(module, nn.Conv2d):
        return _conv2d(module, a, g)
    return _batchnorm(module, a, g)


def _linear(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if a.dim() != 2:
        raise NotImplementedError("exact per-example gradient norms cover Linear on [B, features]")
    out = torch.zeros(a.shape[0], dtype=g.dtype, device=g.device)
    grad_sq = g.pow(2).sum(dim=1)
    if module.weight.requires_grad:
        out += grad_sq * a.pow(2).sum(dim=1)
    if module.bias is not None and module.bias.requires_grad:
        out += grad_sq
    return out


def _conv2d(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    b = a.shape[0]
    out = torch.zeros(b, dtype=g.dtype, device=g.device)
    grad_out = g.flatten(2)  # [B, O, L]
    if module.bias is not None and module.bias.requires_grad:
        out += grad_out.sum(dim=2).pow(2).sum(dim=1)
    if not module.weight.requires_grad:
        return out
    if module.groups != 1:
        raise NotImplementedError("exact per-example gradient norms cover Conv2d with groups=1")
    channels_k = a.shape[1] * module.kernel_size[0] * module.kernel_size[1]
    positions, outs = grad_out.shape[2], grad_out.shape[1]
    ghost = positions * positions * (channels_k + outs) < positions * outs * channels_k
    per_example = (channels_k * positions + positions * positions) if ghost else outs * channels_k
    piece = max(1, PIECE_ELEMENTS // per_example)
    for start in range(0, b, piece):
        part = slice(start, start + piece)
        if ghost:
            unfolded = F.unfold(
                a[part], module.kernel_size, module.dilation, module.padding, module.stride
            )  # [p, Ck^2, L]
            grad = grad_out[part]
            out[part] += (
                (unfolded.transpose(1, 2) @ unfolded) * (grad.transpose(1, 2) @ grad)
            ).sum(dim=(1, 2))
        elif a.shape[1] < GROUPED_MIN_CHANNELS:
            unfolded = F.unfold(
                a[part], module.kernel_size, module.dilation, module.padding, module.stride
            )
            out[part] += (grad_out[part] @ unfolded.transpose(1, 2)).pow(2).sum(dim=(1, 2))
        else:
            out[part] += _per_example_conv_weight_grads(module, a[part], g[part]).pow(2).sum(1)
    return out


def _per_example_conv_weight_grads(
    module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """[p, O * C * k * k]: the batch folded into groups, so one weight-gradient kernel
    computes every example's gradient (as fast as the batch's own weight gradient)."""
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
    return grads.view(p, -1)


def _batchnorm(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if module.training or not module.track_running_stats:
        raise NotImplementedError("exact per-example gradient norms need eval-mode BatchNorm")
    shape = (1, -1) + (1,) * (a.dim() - 2)
    x_hat = (a - module.running_mean.view(shape)) / (
        module.running_var.view(shape) + module.eps
    ).sqrt()
    dims = tuple(range(2, a.dim()))
    out = torch.zeros(a.shape[0], dtype=g.dtype, device=g.device)
    if module.weight is not None and module.weight.requires_grad:
        out += (
            (g * x_hat).sum(dim=dims).pow(2).sum(dim=1) if dims else (g * x_hat).pow(2).sum(dim=1)
        )
    if module.bias is not None and module.bias.requires_grad:
        out += g.sum(dim=dims).pow(2).sum(dim=1) if dims else g.pow(2).sum(dim=1)
    return out
