"""BatchNorm over the global batch of a data-parallel cell on CPU ranks (gloo).

torch's SyncBatchNorm runs on GPUs only (DDP refuses it on CPU modules), so `train.sync_bn`
on CPU ranks (a CPU cluster, the CI's 2-rank tests) swaps BatchNorm layers for this one:
the batch statistics are those of the global batch, computed in two passes as
BatchNorm's own (mean, then the mean squared deviation), through torch.distributed's
differentiable all-reduce, so that the gradient is the global batch's too. On GPUs the
trainer uses torch's SyncBatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as td
from torch import nn
from torch.distributed.nn.functional import all_reduce


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics are the global batch's over all ranks."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synced = self.training and td.is_initialized() and td.get_world_size() > 1
        if not synced:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor([x.numel() // max(x.shape[1], 1)], dtype=torch.float64)
        td.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), n)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """As BatchNorm: momentum (or the cumulative mean), the unbiased variance."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum
        if factor is None:
            factor = 1.0 / float(self.num_batches_tracked.item())
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def convert_to_cpu_sync(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm layer swapped (in place below the top) for CpuSyncBatchNorm,
    sharing its parameters and running statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CpuSyncBatchNorm
    ):
        synced = CpuSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean = module.running_mean
            synced.running_var = module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in list(module.named_children()):
        setattr(module, name, convert_to_cpu_sync(child))
    return module
