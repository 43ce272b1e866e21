"""Train-mode BatchNorm statistics for the fused exchange unit: ``bn_stats`` for one conv,
``bn_stats_many`` for several, one launch per 3 convs (``hrfast::bn_stats_many``).

``bn_stats(part_mean, part_m2, count, ...)`` combines the per-tile (mean, M2) partials that
``hrfast.ops.conv.conv(..., stats=True)`` writes in its epilogue into the batch mean and biased
variance of every channel, and updates each group's running statistics as
``nn.BatchNorm2d.forward`` does (momentum, or a cumulative average when momentum is None;
the unbiased variance; ``num_batches_tracked``). One launch replaces the var_mean, the
momentum updates and the affine arithmetic of eager BN. float64 partials give float64
statistics. ``bn_partials(z)`` writes the same partials from a materialized tensor (a conv
that ran on cuDNN). The statistics are not differentiated here: the consumer of the
normalized values (``hrfast.ops.branch_sum``) owns the full BN backward, so the partials are
taken detached.

Kernels and launchers: ``kernels/batchnorm.py``.

Shapes: partials (P, N) over ``count`` pixels; N channels split into groups of ``widths``
(one BN each); outputs (N,) mean and biased variance in the partials' dtype.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..kernels.launch import HAS_TRITON, acc_dtype, require_triton, stats_tile

if HAS_TRITON:
    from ..kernels.batchnorm import (
        MAX_FINALIZE,
        launch_bn_finalize_many,
        launch_bn_partials,
        partials_tile,
    )


def bn_stats_ref(part_mean: torch.Tensor, part_m2: torch.Tensor, count: int, running_mean: Sequence[torch.Tensor],
                 running_var: Sequence[torch.Tensor], num_batches_tracked: Sequence[torch.Tensor],
                 widths: Sequence[int], momentum: Sequence[Optional[float]],
                 update: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eager twin of :func:`bn_stats`."""
    P, N = part_mean.shape
    tile = stats_tile(count, P)
    cnt = (count - tile * torch.arange(P, device=part_mean.device)).clamp(0, tile).to(part_mean.dtype)[:, None]
    mean = (cnt * part_mean).sum(0) / count
    var = (part_m2 + cnt * (part_mean - mean) ** 2).sum(0) / count
    if update:
        lo = 0
        for rm, rv, nbt, w, m in zip(running_mean, running_var, num_batches_tracked, widths, momentum):
            nbt.add_(1)
            m = 1.0 / float(nbt) if m is None else m
            rm.mul_(1 - m).add_(mean[lo:lo + w].to(rm.dtype), alpha=m)
            rv.mul_(1 - m).add_((var[lo:lo + w] * count / max(count - 1, 1)).to(rv.dtype), alpha=m)
            lo += w
    return mean, var


def _check_partials(part_mean, part_m2, count: int, bns, update: bool) -> None:
    if part_mean.dim() != 2 or part_m2.shape != part_mean.shape:
        raise ValueError(f"part_mean and part_m2 must be the same (P, N) shape, got {tuple(part_mean.shape)} "
                         f"and {tuple(part_m2.shape)}")
    if count < 1 or part_mean.shape[0] != -(-count // stats_tile(count, part_mean.shape[0])):
        raise ValueError(f"count={count} does not match {part_mean.shape[0]} partial rows")
    if update and sum(bn.num_features for bn in bns) != part_mean.shape[1]:
        raise ValueError(f"the BatchNorms cover {sum(bn.num_features for bn in bns)} channels, "
                         f"the partials {part_mean.shape[1]}")
    require_triton(part_mean.device, "bn_stats")


def bn_stats(part_mean: torch.Tensor, part_m2: torch.Tensor, count: int, bns: Sequence[torch.nn.BatchNorm2d] = (),
             update: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch (mean, biased var), each (N,), from partials over ``count`` pixels. With
    ``update``, ``bns`` (one per channel group, in order, widths summing to N) get their
    running statistics updated."""
    return bn_stats_many([(part_mean, part_m2, count, bns)], update)[0]


@torch.library.custom_op("hrfast::bn_stats_many", mutates_args=("running_mean", "running_var", "num_batches_tracked"))
def _bn_stats_many_op(part_means: List[torch.Tensor], part_m2s: List[torch.Tensor], counts: List[int],
                      running_mean: List[torch.Tensor], running_var: List[torch.Tensor],
                      num_batches_tracked: List[torch.Tensor], widths: List[int], groups: List[int],
                      momentum: List[float], update: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    items, lo = [], 0
    for pm, pm2, count, g in zip(part_means, part_m2s, counts, groups):
        hi = lo + (g if update else 0)
        running = list(zip(running_mean[lo:hi], running_var[lo:hi], num_batches_tracked[lo:hi], momentum[lo:hi]))
        items.append((pm, pm2, count, running, widths[lo:hi]))
        lo = hi
    return launch_bn_finalize_many(items, update)


@_bn_stats_many_op.register_fake
def _(part_means, part_m2s, counts, running_mean, running_var, num_batches_tracked, widths, groups, momentum,
      update):
    n = sum(pm.shape[1] for pm in part_means)
    return part_means[0].new_empty(n), part_means[0].new_empty(n)


def bn_stats_many(items: Sequence[Tuple[torch.Tensor, torch.Tensor, int, Sequence[torch.nn.BatchNorm2d]]],
                  update: bool = False) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """:func:`bn_stats` of several convs, ``items`` of (part_mean, part_m2, count, bns), in one
    launch per ``MAX_FINALIZE`` of them: [(mean, var)] in order."""
    for pm, pm2, count, bns in items:
        _check_partials(pm, pm2, count, bns, update)
    out: List[Tuple[torch.Tensor, torch.Tensor]] = []
    for k in range(0, len(items), MAX_FINALIZE):
        chunk = items[k:k + MAX_FINALIZE]
        bns = [bn for it in chunk for bn in (it[3] if update else [])]
        res = torch.ops.hrfast.bn_stats_many(
            [it[0].detach() for it in chunk], [it[1].detach() for it in chunk], [int(it[2]) for it in chunk],
            [bn.running_mean for bn in bns], [bn.running_var for bn in bns], [bn.num_batches_tracked for bn in bns],
            [bn.num_features for bn in bns], [len(it[3]) if update else 0 for it in chunk],
            [-1.0 if bn.momentum is None else float(bn.momentum) for bn in bns], bool(update))
        ns = [it[0].shape[1] for it in chunk]
        out += list(zip(res[0].split(ns), res[1].split(ns)))
    return out


@torch.library.custom_op("hrfast::bn_partials", mutates_args=())
def _bn_partials_op(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    pm, pm2 = launch_bn_partials(z)
    return pm, pm2


@_bn_partials_op.register_fake
def _(z):
    B, C, H, W = z.shape
    P = -(-(B * H * W) // partials_tile(z.device))
    return z.new_empty((P, C), dtype=acc_dtype(z.dtype)), z.new_empty((P, C), dtype=acc_dtype(z.dtype))


def bn_partials(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-tile (mean, M2) of every channel of z (B, C, H, W), as :func:`bn_stats` takes them."""
    if z.dim() != 4 or not z.is_floating_point():
        raise ValueError(f"z must be a floating (B, C, H, W) tensor, got {z.dtype} {tuple(z.shape)}")
    require_triton(z.device, "bn_partials")
    return torch.ops.hrfast.bn_partials(z)
