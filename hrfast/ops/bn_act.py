"""Train-mode BatchNorm, residual add and ReLU on the CPU, two passes each way.

Eager training runs ``relu(bn(x) + residual)`` as four passes over the activation forward
(BN's statistics, its normalization, the add, the ReLU) and three backward (the ReLU mask, BN's
gradient statistics, its input gradient), each reading or writing a full tensor.
``bn_act`` does two each way (``csrc/bn_act.cpp``):

- forward: ``hrfast::batch_stats`` (the batch mean and variance, and the running statistics
  updated as ``nn.BatchNorm2d`` does), then ``hrfast::bn_act`` (normalize, add, ReLU, one
  write);
- backward: ``hrfast::bn_act_backward``: the masked gradient's two sums per channel, then the
  input gradient and the residual's in one write. Without a residual the ReLU's mask is
  rebuilt from x with the forward's own arithmetic, so the output is not read (nor kept).

On W32's branch shapes at batch 8 in bf16 (tensors of 0.2-1.5 MiB) that measured 1.1-3.5x
eager's speed, forward and backward; on 12 MiB tensors, bound by memory traffic, 1.0-2.1x
(``benchmarks/bn_act.py``, ``benchmarks/RESULTS.md``). ``bn_act_ref`` is the eager twin with the same signature.
:class:`NormAct` is the hook of :mod:`hrfast.models.blocks` (the blocks and the stem) on this
op; ``hrfast.ops.norm_act.install_norm_act`` installs it for a model on the CPU (and the same
fusion on Triton's ops for one on CUDA). ``hrfast.optimize(mode="training")`` does it on both,
the pose ``hrfast train`` on the CPU.

Shapes: x, residual and the result (N, C, H, W) channels_last, float32 or bfloat16 (autocast);
the BN's parameters and statistics float32 (C,).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._extension import HAS_EXTENSION

# an extension built before this op existed serves the other ops but not this one
HAS_OP = HAS_EXTENSION and hasattr(torch.ops.hrfast, "bn_act")
_DTYPES = (torch.float32, torch.bfloat16)


def bn_act_ref(x: torch.Tensor, bn: nn.BatchNorm2d, residual: Optional[torch.Tensor] = None,
               relu: bool = True) -> torch.Tensor:
    """Eager twin of :func:`bn_act`: ``relu(bn(x) + residual)``."""
    out = bn(x)
    if residual is not None:
        out = out + residual
    return torch.relu(out) if relu else out


def fusable_bn(bn: nn.Module) -> bool:
    """A train-mode affine ``nn.BatchNorm2d`` (not a subclass such as SyncBatchNorm) with running
    statistics: what both fused forms (this op, :mod:`hrfast.ops.norm_act`) compute."""
    return type(bn) is nn.BatchNorm2d and bn.training and bn.affine and bn.track_running_stats


def applies(bn: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> bool:
    """Whether :func:`bn_act` runs the native kernels for these arguments (else the twin): a
    :func:`fusable_bn` with float32 parameters, and CPU channels_last activations in float32 or
    bfloat16 (the residual alike)."""
    if not (HAS_OP and fusable_bn(bn)):
        return False
    if bn.weight.dtype != torch.float32 or bn.running_mean.dtype != torch.float32:
        return False
    if x.device.type != "cpu" or x.dim() != 4 or x.dtype not in _DTYPES or x.numel() == 0:
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return residual is None or (residual.shape == x.shape and residual.dtype == x.dtype
                                and residual.device == x.device
                                and residual.is_contiguous(memory_format=torch.channels_last))


def bn_act(x: torch.Tensor, bn: nn.BatchNorm2d, residual: Optional[torch.Tensor] = None,
           relu: bool = True) -> torch.Tensor:
    """``relu(bn(x) + residual)`` for a train-mode ``bn``, its running statistics updated;
    differentiable in x, residual and bn's weight and bias. Falls back to :func:`bn_act_ref`
    where :func:`applies` is false."""
    if not applies(bn, x, residual):
        return bn_act_ref(x, bn, residual, relu)
    mean, var = torch.ops.hrfast.batch_stats(x.detach(), bn.running_mean, bn.running_var,
                                             bn.num_batches_tracked, bn.momentum)
    return torch.ops.hrfast.bn_act(x, residual, bn.weight, bn.bias, mean, var, bn.eps, relu)


class NormAct:
    """The ``norm_act_impl`` hook of :mod:`hrfast.models.blocks`, on :func:`bn_act`."""

    @staticmethod
    def applies(bn: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> bool:
        return applies(bn, x, residual)

    def __call__(self, x, bn, residual=None, relu=True):
        return bn_act(x, bn, residual, relu)


def _channels(x, t, name):
    torch._check(t.dim() == 1 and t.shape[0] == x.shape[1], lambda: f"{name} must be (C,) like x's channels")


def _register() -> None:
    """Fakes for the three kernels (the autograd of ``hrfast::bn_act`` is C++'s)."""
    if not HAS_OP:
        return

    @torch.library.register_fake("hrfast::batch_stats")
    def _(x, running_mean, running_var, num_batches_tracked, momentum):
        torch._check(x.dim() == 4, lambda: "x must be (N, C, H, W)")
        _channels(x, running_mean, "running_mean")
        return x.new_empty(x.shape[1], dtype=torch.float32), x.new_empty(x.shape[1], dtype=torch.float32)

    @torch.library.register_fake("hrfast::bn_act")
    def _(x, residual, weight, bias, mean, var, eps, relu):
        torch._check(x.dim() == 4, lambda: "x must be (N, C, H, W)")
        for t, name in ((weight, "weight"), (bias, "bias"), (mean, "mean"), (var, "var")):
            _channels(x, t, name)
        return torch.empty_like(x, memory_format=torch.channels_last)

    @torch.library.register_fake("hrfast::bn_act_backward")
    def _(grad, x, y, weight, bias, mean, var, eps, relu, residual):
        torch._check(grad.shape == x.shape, lambda: "grad must be shaped like x")
        torch._check(not (relu and residual) or (y is not None and y.shape == x.shape),
                     lambda: "y must be given, shaped like x, with relu and residual")
        dres = torch.empty_like(x, memory_format=torch.channels_last) if relu and residual else x.new_empty(0)
        return (torch.empty_like(x, memory_format=torch.channels_last), torch.empty_like(weight),
                torch.empty_like(weight), dres)


_register()
