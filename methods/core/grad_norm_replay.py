"""Per-example gradients of a site's parameters by replaying the site's own ops.

For a site s with parameters θ (the class token and position embeddings of a ViT, a
layer scale, a norm of any form), the chain rule cut at s's output and at the inputs
of the modules s calls gives each example's gradient exactly:
    g_i = d/dθ [ <G_i, s(a_i; θ)> + sum_k <H_ki, z_ki(θ)> ],
with the called modules replaced by what they returned (constants), G the gradient of
s's output, z_k the input of the k-th called module and H_k the gradient that reached
z_k through that module. `torch.func.vmap` runs the replay for a piece of examples at
once; only s's own ops are recomputed, never the modules it calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from methods.core.grad_norm_plan import LAST_LAYER, Site


@dataclass
class Recorded:
    """A module input or output as the forward saw it: its pytree leaves, which of them
    carry the batch, and their versions (an in-place change afterwards is refused)."""

    leaves: list[Any]
    spec: Any
    batched: list[bool]
    versions: list[int]

    @classmethod
    def of(cls, value: Any, batch: int) -> Recorded:
        leaves, spec = tree_flatten(value)
        leaves = [t.detach() if isinstance(t, torch.Tensor) else t for t in leaves]
        batched = [
            isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == batch for t in leaves
        ]
        versions = [t._version if isinstance(t, torch.Tensor) else 0 for t in leaves]
        return cls(leaves, spec, batched, versions)

    def changed(self) -> bool:
        return any(
            isinstance(t, torch.Tensor) and t._version != v
            for t, v in zip(self.leaves, self.versions, strict=True)
        )

    def batch_leaves(self) -> list[torch.Tensor]:
        return [t for t, b in zip(self.leaves, self.batched, strict=True) if b]

    def rebuild(self, examples: list[torch.Tensor]) -> Any:
        """The value for one example (batch of one) from its per-example leaves."""
        it = iter(examples)
        leaves = [
            next(it).unsqueeze(0) if b else t
            for t, b in zip(self.leaves, self.batched, strict=True)
        ]
        return tree_unflatten(leaves, self.spec)


@dataclass
class SiteCall:
    """What one pass recorded of a site's call, and the gradients still awaited."""

    args: Recorded
    kwargs: dict[str, Any]
    outputs: list[torch.Tensor] = field(default_factory=list)  # hooked output leaves
    output_keep: list[bool] = field(default_factory=list)  # which tensor leaves are hooked
    grad_out: list[torch.Tensor | None] = field(default_factory=list)
    callee_out: list[Recorded] = field(default_factory=list)
    callee_in_pos: list[list[int]] = field(default_factory=list)  # hooked argument positions
    grad_in: list[list[torch.Tensor | None]] = field(default_factory=list)
    pending: int = 0
    next_callee: int = 0
    done: bool = False


def _check_unchanged(call: SiteCall, name: str) -> None:
    if call.args.changed() or any(r.changed() for r in call.callee_out):
        raise NotImplementedError(
            f"module {name!r}: a tensor it used was modified in place later in the forward, "
            f"so its replay would not see what the forward saw; {LAST_LAYER}"
        )


def replay_sq_norms(
    site_module: nn.Module, site: Site, call: SiteCall, name: str, piece_elements: int
) -> torch.Tensor:
    """||g_i||^2 over the site's parameters for every example of the pass."""
    from torch.func import functional_call, grad, vmap

    _check_unchanged(call, name)
    theta = {k: p.detach() for k, p in site.params.items()}
    args_b = call.args.batch_leaves()
    outs_b = [r.batch_leaves() for r in call.callee_out]
    batch = args_b[0].shape[0] if args_b else call.outputs[0].shape[0]
    g_out = [
        g if g is not None else torch.zeros_like(t)
        for g, t in zip(call.grad_out, call.outputs, strict=True)
    ]
    hooked_in = [[g is not None for g in grads] for grads in call.grad_in]  # None: none came
    g_in = [[g for g in grads if g is not None] for grads in call.grad_in]
    flat = [*args_b, *[t for ts in outs_b for t in ts], *g_out, *[g for gs in g_in for g in gs]]
    sizes = (len(args_b), [len(ts) for ts in outs_b], len(g_out), [len(gs) for gs in g_in])

    def scalar(params, *per_example):
        it = iter(per_example)
        a = [next(it) for _ in range(sizes[0])]
        outs = [[next(it) for _ in range(n)] for n in sizes[1]]
        grads_out = [next(it) for _ in range(sizes[2])]
        grads_in = [[next(it) for _ in range(n)] for n in sizes[3]]
        captured: list[tuple] = []
        stubs = _stubs(site, call, outs, captured)
        args = call.args.rebuild(a)
        try:
            for module, stub in stubs.items():
                module.forward = stub
            result = functional_call(site_module, params, tuple(args), call.kwargs)
        finally:
            for module in stubs:
                del module.forward
        leaves = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
        hooked = [t for t, keep in zip(leaves, call.output_keep, strict=True) if keep]
        total = sum((t[0] * g).sum() for t, g in zip(hooked, grads_out, strict=True))
        for k, inputs in enumerate(captured):
            used = [z for z, h in zip(_grad_args(call, k, inputs), hooked_in[k], strict=True) if h]
            total = total + sum((z[0] * g).sum() for z, g in zip(used, grads_in[k], strict=True))
        return total

    per_example = vmap(grad(scalar), in_dims=(None, *[0] * len(flat)))
    numel = sum(p.numel() for p in theta.values())
    piece = max(1, piece_elements // max(numel, 1))
    out = []
    try:
        for s in range(0, batch, piece):
            grads = per_example(theta, *[t[s : s + piece] for t in flat])
            out.append(sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values()))
    except (RuntimeError, TypeError, ValueError) as err:
        raise NotImplementedError(
            f"module {name!r} ({type(site_module).__name__}) could not be replayed per example "
            f"with torch.func ({type(err).__name__}: {str(err).splitlines()[0]}); {LAST_LAYER}"
        ) from err
    return torch.cat(out)


def _grad_args(call: SiteCall, k: int, inputs: tuple) -> list[torch.Tensor]:
    """The k-th callee's inputs whose gradient the forward hooked, as the replay made them."""
    return [inputs[j] for j in call.callee_in_pos[k]]


def _stubs(
    site: Site, call: SiteCall, outs: list[list[torch.Tensor]], captured: list[tuple]
) -> dict[nn.Module, Callable]:
    """Each called module returns what it returned in the forward and keeps its inputs."""
    order: dict[nn.Module, list[int]] = {}
    for k, module in enumerate(site.callees):
        order.setdefault(module, []).append(k)

    def make(module: nn.Module) -> Callable:
        queue = list(order[module])

        def stub(*args, **kwargs):
            k = queue.pop(0)
            captured.append(args)
            return call.callee_out[k].rebuild(outs[k])

        return stub

    return {module: make(module) for module in order}
