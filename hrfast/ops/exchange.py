"""Backend choice for exchange units: the reference (eager) path or the fused Triton path.

The fused path (``FusedExchange``) computes every output branch ``i`` of a unit as one
``fused_sum`` call::

    y_i = ReLU( x_i + sum_{j>i} up(z_ij * s_ij + t_ij) + sum_{j<i} (d_ij * s_ij + t_ij) )

``z_ij`` is the 1x1 conv of ``x_j`` run at ``x_j``'s low resolution. ``d_ij`` is the last
strided 3x3 conv of the downsample chain. The chain convs run on the implicit-GEMM Triton conv
(``hrfast.ops.conv``). In eval mode each step's BN and ReLU, and for the last step the add
into the branch sum and the final ReLU, are in that conv's epilogue. ``s, t`` is the BatchNorm affine of that conv. In eval mode it comes from the
running statistics, which is the same as folding BN into the conv: no separate BN pass is
made. In train mode it comes from the batch statistics, exactly as ``nn.BatchNorm2d``
computes them (biased variance to normalize, unbiased for ``running_var``, ``momentum``,
``num_batches_tracked``). Autograd differentiates through the statistics. Normalization,
nearest upsampling, the sum, the identity term and the ReLU happen in the kernel, and the
upsampled terms are never materialized. The 1x1 convs stay cuBLAS/cuDNN GEMMs.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..models.exchange import ExchangeUnit
from ..models.hrnet import BACKENDS
from .fused_sum import HAS_TRITON, fused_sum, fused_sum_any, triton_runs_on


def bn_affine(bn: nn.BatchNorm2d, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (C,), such that ``bn(z) == z * scale + shift`` per channel; updates the
    running statistics in train mode exactly as ``nn.BatchNorm2d.forward`` does. A BN already
    folded into its conv (``nn.Identity``, see ``hrfast.optimize``) gives (1, 0)."""
    dt = torch.float64 if z.dtype == torch.float64 else torch.float32   # the kernels' accumulation dtype
    if isinstance(bn, nn.Identity):
        ones = torch.ones(z.shape[1], dtype=dt, device=z.device)
        return ones, torch.zeros_like(ones)
    use_batch = bn.training or not bn.track_running_stats
    if use_batch:
        zf = z.float()
        var, mean = torch.var_mean(zf, dim=(0, 2, 3), unbiased=False)
        if bn.training and bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                n = z.numel() / z.shape[1]
                bn.running_mean.mul_(1 - m).add_(mean.detach().to(bn.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / max(n - 1, 1))
                bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)
    else:
        mean, var = bn.running_mean, bn.running_var
    inv = torch.rsqrt(var + bn.eps)
    scale = bn.weight * inv if bn.affine else inv
    shift = (bn.bias - mean * scale) if bn.affine else -mean * scale
    return scale.to(dt), shift.to(dt)


def _is_triton_conv3x3(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.stride in ((1, 1), (2, 2)))


def conv3x3_bn(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, add=None, relu: bool = False,
               triton_conv: bool = True) -> torch.Tensor:
    """``act(BN(conv(x)) + add)`` for a 3x3 conv step.

    Eval mode (running statistics, or BN folded away): one implicit-GEMM Triton kernel with the
    BN affine, the add and the ReLU in its epilogue. Train mode: the batch statistics need the
    whole conv output first, so the conv runs alone (Triton) and ``fused_sum`` applies the
    rest."""
    from .conv import conv3x3
    batch_stats = isinstance(bn, nn.BatchNorm2d) and (bn.training or not bn.track_running_stats)
    use_triton = triton_conv and _is_triton_conv3x3(conv)
    if use_triton and not batch_stats:
        s, t = bn_affine(bn, x.new_empty(0, conv.out_channels, 1, 1))
        if conv.bias is not None:      # a folded BN: (acc + b) * s + t
            t = t + s * conv.bias.to(s.dtype)
        return conv3x3(x, conv.weight, conv.stride[0], s, t, add, relu)
    if use_triton:
        z = conv3x3(x, conv.weight, conv.stride[0])
        if conv.bias is not None:
            z = z + conv.bias.view(1, -1, 1, 1).to(z.dtype)
    else:
        z = conv(x)
    s, t = bn_affine(bn, z)
    return fused_sum(add, [z], [s], [t], [1], relu)


def conv_bn_act(step: nn.Sequential, x: torch.Tensor, relu: bool, triton_conv: bool = True) -> torch.Tensor:
    """A (conv, BN[, ReLU]) step as conv + fused BN(+ReLU) epilogue."""
    return conv3x3_bn(step[0], step[1], x, None, relu, triton_conv)


class FusedExchange:
    """The fused forward of an :class:`ExchangeUnit` (installed as ``unit._fused``).

    ``triton_conv``: run the strided 3x3 chains on the implicit-GEMM Triton conv (default), or
    on cuDNN/oneDNN with the Triton epilogue. A GPU measurement decides which per shape; none
    exists yet (benchmarks/RESULTS.md), so the Triton conv is the default."""

    def __init__(self, triton_conv: bool = True):
        self.triton_conv = triton_conv

    def applies(self, xs: Sequence[torch.Tensor]) -> bool:
        return all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs) and \
            triton_runs_on(xs[0].device)

    def __call__(self, unit: ExchangeUnit, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        unit.check_inputs(xs)
        xs = [x.contiguous() for x in xs]   # the kernels index NCHW; channels_last is converted
        n = len(unit.channels)
        out = []
        for i in range(unit.num_outputs):
            row = unit[i]
            zs, ss, ts, fs = [], [], [], []
            for j in range(i + 1, n):   # 1x1 conv at low resolution; BN, upsample and add in the kernel
                z = row[j][0](xs[j])
                s, t = bn_affine(row[j][1], z)
                zs.append(z)
                ss.append(s)
                ts.append(t)
                fs.append(2 ** (j - i))
            # strided 3x3 chains: the intermediate steps with a BN+ReLU epilogue; the last one
            # adds its BN output straight into the running sum (and applies the final ReLU)
            chains = []
            for j in range(i):
                h = xs[j]
                for step in row[j][:-1]:
                    h = conv_bn_act(step, h, relu=True, triton_conv=self.triton_conv)
                chains.append((row[j][-1], h))
            if zs:
                acc = fused_sum_any(xs[i], zs, ss, ts, fs, relu=not chains)
            else:
                acc = xs[i]
            for k, (step, h) in enumerate(chains):
                acc = conv3x3_bn(step[0], step[1], h, add=acc, relu=k == len(chains) - 1,
                                 triton_conv=self.triton_conv)
            out.append(acc)
        return out


class fused_transition_step:
    """Transition steps (conv, BN, ReLU) as conv + fused BN+ReLU epilogue, where ``fused``
    (the units' FusedExchange) applies."""

    def __init__(self, fused: "FusedExchange"):
        self.fused = fused

    def applies(self, x: torch.Tensor) -> bool:
        return self.fused.applies([x])

    def __call__(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return conv_bn_act(seq, x.contiguous(), relu=True, triton_conv=self.fused.triton_conv)


def attach_backend(model: nn.Module, backend: str) -> None:
    """Point every :class:`ExchangeUnit` of ``model`` at ``backend``.

    ``triton``: the fused path wherever the kernels can run (CUDA; CPU under
    ``TRITON_INTERPRET=1``), the reference elsewhere. ``auto``: fused on CUDA, reference on CPU
    (decided per call from the input's device). ``reference``: eager PyTorch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and not HAS_TRITON:
        raise RuntimeError("backend='triton' needs Triton: pip install triton")
    fused = None
    if backend == "triton":
        fused = FusedExchange()
    elif backend == "auto" and HAS_TRITON:
        fused = _CudaOnly()
    for unit in model.modules():
        if isinstance(unit, ExchangeUnit):
            unit._fused = fused


class _CudaOnly(FusedExchange):
    def applies(self, xs):
        return xs[0].device.type == "cuda" and super().applies(xs)
