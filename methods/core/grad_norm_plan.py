"""Which closed form covers each parameter of a model, found by tracing one example.

A traced forward records, for every op that uses a trainable parameter, the innermost
module running at that moment (the parameter's *site*), and which modules each module
calls. A parameter is then covered in exactly one way:
- by its layer's closed form, when the layer is a plain Linear, Conv2d, BatchNorm,
  LayerNorm or GroupNorm and every use of its parameters is in its own forward;
- else by replaying its one site per example (`methods.core.grad_norm_replay`): the site's
  own ops rerun under `torch.func.vmap`, the modules it calls replaced by what they
  returned, which is exact for the class token, position embeddings, layer scales and
  norms of any form;
- parameters no op uses have zero gradient.
A parameter used at two sites, a layer or site that runs twice per pass, or batch
statistics are refused with the parameter named, since their per-example norms do not
split into the parts computed here. So is a layer or site whose tensors do not carry
the examples in their first dimension (the batch folded with windows or tokens, as in
Swin or LeViT; a sequence-first [T, B, D] layout): two forwards of 2 and 3 examples
show where the batch is, so that a first dimension that equals the chunk size by chance
is never taken for it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LAYERS = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm, *BATCHNORMS)
LAST_LAYER = "use method.params=last_layer (the closed form over the head) for this model"
# LayerNorm subclasses of timm and torchvision whose forward is F.layer_norm over one
# dimension (their source: a permute to channels-last around it for the 2d forms), so
# that nn.LayerNorm's closed form applies over that dimension; timm's fast-norm variant
# (other kernels, maybe lower precision) is replayed instead
CHANNEL_NORMS = {
    "timm.layers.norm.LayerNorm": -1,
    "timm.layers.norm.LayerNorm2d": 1,
    "torchvision.models.convnext.LayerNorm2d": 1,
}


@dataclass
class Site:
    """A module whose own ops use `params`; `callees` are the modules with trainable
    parameters it calls, in call order; `grad_in[k]` says whether the k-th call's input
    may depend on `params` (a use came before it), so that its input gradient is needed."""

    params: dict[str, nn.Parameter]
    callees: list[nn.Module] = field(default_factory=list)
    grad_in: list[bool] = field(default_factory=list)


@dataclass
class Plan:
    layers: list[nn.Module]
    sites: dict[nn.Module, Site]
    names: dict[nn.Module, str]


def _trainable_own(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def norm_dim(module: nn.Module) -> int | None:
    """The normalised dimension of a LayerNorm the closed form knows, else None."""
    kind = type(module)
    if kind.forward is nn.LayerNorm.forward:
        return -1
    known = CHANNEL_NORMS.get(f"{kind.__module__}.{kind.__qualname__}")
    own_forward = "forward" in vars(kind)
    return known if own_forward and not getattr(module, "_fast_norm", False) else None


def is_closed_form_layer(module: nn.Module) -> bool:
    base = next((t for t in LAYERS if isinstance(module, t)), None)
    if base is None or not set(_trainable_own(module)) <= {"weight", "bias"}:
        return False
    if base is nn.LayerNorm:
        return norm_dim(module) is not None
    return type(module).forward is base.forward


class _Uses(TorchFunctionMode):
    """Records (site, parameter) for every op on a parameter whose result takes part in
    autograd (shape or dtype reads are no use); the site is the innermost running module
    that contains the parameter, so a parameter passed to a module as its input counts
    as used by the caller."""

    def __init__(self, model: nn.Module, params: dict[int, nn.Parameter], stack: list) -> None:
        super().__init__()
        self.params, self.stack = params, stack
        self.events: list[tuple[str, nn.Module | None, object]] = []
        self.within: dict[int, set[nn.Module]] = defaultdict(set)
        for module in model.modules():
            for p in module.parameters():
                self.within[id(p)].add(module)

    def site(self, p: torch.Tensor) -> nn.Module | None:
        return next((m for m in reversed(self.stack) if m in self.within[id(p)]), None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if any(t.requires_grad for t in results):
            for leaf in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(leaf, torch.Tensor) and id(leaf) in self.params:
                    self.events.append(("use", self.site(leaf), self.params[id(leaf)]))
        return out


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str, nn.Parameter]]:
    owners: dict[int, tuple[nn.Module, str, nn.Parameter]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, p in _trainable_own(module).items():
            full = f"{prefix}.{name}" if prefix else name
            if id(p) in owners and owners[id(p)][0] is not module:
                raise NotImplementedError(
                    f"parameter {full!r} is shared with {owners[id(p)][1]!r}: the norm of a "
                    f"shared parameter's gradient does not split into per-use parts; {LAST_LAYER}"
                )
            owners[id(p)] = (module, full, p)
    return owners


def trace(model: nn.Module, x: torch.Tensor) -> Plan:
    """Plan the closed forms from one traced forward of `x` (one example suffices)."""
    owners = _owners(model)
    names = {m: n or type(m).__name__ for n, m in model.named_modules()}
    for module, name in names.items():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise NotImplementedError(
                f"module {name!r} ({type(module).__name__}) keeps no running statistics: its "
                "batch statistics couple the examples, so per-example gradients are not "
                f"defined; {LAST_LAYER}"
            )
    stack: list[nn.Module] = []
    calls: dict[nn.Module, int] = defaultdict(int)
    mode = _Uses(model, {pid: p for pid, (_, _, p) in owners.items()}, stack)

    def enter(module, args):
        # a parameter passed in: the caller's replay needs the gradient of this input
        takes = any(isinstance(a, torch.Tensor) and id(a) in owners for a in tree_flatten(args)[0])
        mode.events.append(("call", stack[-1] if stack else None, (module, takes)))
        calls[module] += 1
        stack.append(module)

    def leave(module, args, output):
        stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        with torch.enable_grad(), mode:
            model(x.detach())
    finally:
        for handle in handles:
            handle.remove()
    plan = _plan(mode.events, owners, names, calls)
    _check_batch_first(model, x[:1].detach(), plan)
    return plan


def _plan(events, owners, names, calls) -> Plan:
    sites_of: dict[int, set[nn.Module | None]] = defaultdict(set)
    for kind, site, p in events:
        if kind == "use":
            sites_of[id(p)].add(site)
    layers = [
        m
        for m in names
        if calls[m]
        and _trainable_own(m)
        and is_closed_form_layer(m)
        and all(sites_of[id(p)] <= {m} for p in _trainable_own(m).values())
    ]
    closed = {id(p) for m in layers for p in _trainable_own(m).values()}
    by_site: dict[nn.Module, dict[str, nn.Parameter]] = defaultdict(dict)
    for pid, (_, full, p) in owners.items():
        sites = sites_of.get(pid, set())
        if pid in closed or not sites:
            continue
        if len(sites) > 1 or None in sites:
            where = ", ".join(sorted(names.get(s, "(outside any module)") for s in sites))
            raise NotImplementedError(
                f"parameter {full!r} is used in the forward of {where}: its per-example "
                f"gradient sums uses at more than one place, which is not covered; {LAST_LAYER}"
            )
        (site,) = sites
        by_site[site][_relative(site, p, full, names)] = p
    for module in [*layers, *by_site]:
        if calls[module] > 1:
            raise NotImplementedError(
                f"module {names[module]!r} ({type(module).__name__}) runs more than once per "
                "forward pass: the norm of a shared parameter's gradient does not split into "
                f"per-call parts; {LAST_LAYER}"
            )
    sites = {s: _site(s, params, events) for s, params in by_site.items()}
    _check_count(owners, layers, sites, sites_of)
    return Plan(layers=layers, sites=sites, names=names)


def _relative(site: nn.Module, p: nn.Parameter, full: str, names) -> str:
    """The parameter's name as `torch.func.functional_call(site, ...)` expects it."""
    for name, q in site.named_parameters(remove_duplicate=False):
        if q is p:
            return name
    raise NotImplementedError(
        f"parameter {full!r} is used in the forward of {names[site]!r}, which does not "
        f"contain it; {LAST_LAYER}"
    )


def _site(site: nn.Module, params: dict[str, nn.Parameter], events) -> Site:
    ids = {id(p) for p in params.values()}
    out = Site(params=params)
    used = False
    for kind, parent, item in events:
        if parent is not site:
            continue
        if kind == "use" and id(item) in ids:
            used = True
        elif kind == "call" and _has_trainable(item[0]):
            out.callees.append(item[0])
            out.grad_in.append(used or item[1])
    return out


def _check_count(owners, layers, sites, sites_of) -> None:
    """Every trainable parameter covered exactly once: by a layer, a site or no use."""
    covered = [id(p) for m in layers for p in _trainable_own(m).values()]
    covered += [id(p) for s in sites.values() for p in s.params.values()]
    covered += [pid for pid in owners if not sites_of.get(pid)]
    if sorted(covered) != sorted(owners):
        raise RuntimeError("internal: the closed forms do not cover each parameter exactly once")


PROBE_BATCHES = (2, 3)


def _check_batch_first(model: nn.Module, x: torch.Tensor, plan: Plan) -> None:
    """Every tensor a layer or site (or a module a site calls) takes or gives is either
    the same whatever the batch or [B, ...] with the examples first, as the closed forms
    and the per-example replay read it; a layer's input depends on the examples."""
    watched = {*plan.layers, *plan.sites}
    watched.update(m for site in plan.sites.values() for m in site.callees)
    if not watched:
        return
    seen: dict[int, list[tuple[nn.Module, list[tuple[int, ...]]]]] = {}
    for b in PROBE_BATCHES:
        calls: list[tuple[nn.Module, list[tuple[int, ...]]]] = []

        def record(module, args, kwargs, output, calls=calls):
            leaves = tree_flatten((args, kwargs, output))[0]
            calls.append((module, [tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor)]))

        handles = [m.register_forward_hook(record, with_kwargs=True) for m in watched]
        try:
            with torch.no_grad():
                model(x.expand(b, *x.shape[1:]).clone())
        finally:
            for handle in handles:
                handle.remove()
        seen[b] = calls
    small, large = (seen[b] for b in PROBE_BATCHES)
    if [m for m, _ in small] != [m for m, _ in large]:
        raise NotImplementedError(
            f"the model runs other modules for {PROBE_BATCHES[0]} and {PROBE_BATCHES[1]} "
            f"examples, so its per-example gradients are not traced; {LAST_LAYER}"
        )
    for (module, shapes), (_, other) in zip(small, large, strict=True):
        layer = module in plan.layers
        for k, (s, t) in enumerate(zip(shapes, other, strict=True)):
            why = _batch_layout(s, t)
            if why is None and layer and k == 0 and s == t:  # the input: a layer's first leaf
                why = f"an input without the batch dimension (the same {list(s)} for any batch)"
            if why is not None:
                kind = "layer" if layer else "module"
                raise NotImplementedError(
                    f"{kind} {plan.names[module]!r} ({type(module).__name__}) gets {why}, "
                    f"but the exact norms need each example's own slice first; {LAST_LAYER}"
                )


def _batch_layout(small: tuple[int, ...], large: tuple[int, ...]) -> str | None:
    """What is wrong with a tensor of shape `small` for 2 examples and `large` for 3, or
    None if it is [B, ...] or does not depend on the batch."""
    b2, b3 = PROBE_BATCHES
    if small == large or ((small[:1], large[:1]) == ((b2,), (b3,)) and small[1:] == large[1:]):
        return None
    if len(small) == len(large) and small[1:] == large[1:] and small and small[0] % b2 == 0:
        k = small[0] // b2
        if large[0] == k * b3:
            shown = ", ".join(["B*" + str(k), *map(str, small[1:])])
            return f"the batch folded with {k} windows/tokens per example ([{shown}])"
    if len(small) == len(large):
        varying = [d for d, (m, n) in enumerate(zip(small, large, strict=True)) if m != n]
        if len(varying) == 1 and (small[varying[0]], large[varying[0]]) == (b2, b3):
            shown = ", ".join("B" if d in varying else str(n) for d, n in enumerate(small))
            return f"the batch in dimension {varying[0]} ([{shown}]), as a sequence-first layout"
    return (
        f"a tensor whose shape does not follow the batch first ({list(small)} for {b2} "
        f"examples, {list(large)} for {b3})"
    )
