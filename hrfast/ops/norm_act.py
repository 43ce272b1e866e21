"""Train-mode BatchNorm, residual add and ReLU of the blocks and the stem on the GPU, on the
fused exchange unit's Triton ops: the ``norm_act_impl`` hook of :mod:`hrfast.models.blocks`
where ``hrfast.ops.bn_act`` (native, CPU-only) does not run.

Eager training runs ``relu(bn(x) + residual)`` as cuDNN's BN (statistics, then the
normalization), an add and a ReLU forward, and the ReLU mask, BN's backward and the add's
gradient backward. :func:`norm_act` composes three ops that the exchange units already use:

- ``bn_partials`` (one launch): per-tile mean and M2 of every channel of x;
- ``bn_stats`` (one launch): the batch mean and biased variance, the running statistics
  updated as ``nn.BatchNorm2d`` does (momentum or the cumulative average, the unbiased
  variance, ``num_batches_tracked``), with no host sync, so a CUDA graph can hold it;
- ``branch_sum`` with one term at factor 1 and batch statistics (one launch): normalize, add
  the residual, ReLU, one write. Its backward (three launches) is the whole BN backward through
  the batch statistics, with the ReLU mask and the residual's gradient inside.

:func:`hrfast.ops.bn_act.bn_act_ref` is the eager twin (same arguments, same result).
:func:`install_norm_act` sets the hook of a model: this form for one on CUDA, the native
``hrfast.ops.bn_act`` for one on the CPU. On the CPU this form runs in Triton's interpreter,
which is how the tests check it.

Shapes: x, residual and the result (N, C, H, W), NCHW or channels_last, in float32, float16,
bfloat16 (autocast) or float64; the BN's parameters and statistics float32 (float64 with x).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..kernels.launch import FLOATS, HAS_TRITON, Affine, triton_runs_on
from .batchnorm import bn_partials, bn_stats
from .bn_act import HAS_OP, NormAct, bn_act_ref, fusable_bn
from .branch_sum import branch_sum


def applies(bn: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> bool:
    """Whether :func:`norm_act` runs the Triton ops for these arguments: a
    :func:`~hrfast.ops.bn_act.fusable_bn`, x a non-empty 4-d float tensor where the kernels run
    (CUDA, or the CPU under the interpreter), the residual alike."""
    if not fusable_bn(bn):
        return False
    if x.dim() != 4 or x.dtype not in FLOATS or x.numel() == 0 or not triton_runs_on(x.device):
        return False
    if bn.weight.dtype != (torch.float64 if x.dtype == torch.float64 else torch.float32):
        return False
    return residual is None or (residual.shape == x.shape and residual.dtype == x.dtype
                                and residual.device == x.device)


def norm_act(x: torch.Tensor, bn: nn.BatchNorm2d, residual: Optional[torch.Tensor] = None,
             relu: bool = True) -> torch.Tensor:
    """``relu(bn(x) + residual)`` for a train-mode ``bn``, its running statistics updated;
    differentiable in x, residual and bn's weight and bias. Falls back to the eager twin
    (:func:`~hrfast.ops.bn_act.bn_act_ref`) where :func:`applies` is false."""
    if not applies(bn, x, residual):
        return bn_act_ref(x, bn, residual, relu)
    n, _, h, w = x.shape
    mean, var = bn_stats(*bn_partials(x.detach()), n * h * w, [bn], update=True)
    return branch_sum(residual, [x], [1], [Affine(bn.weight, bn.bias, mean, var, bn.eps)], [True], relu)


class TritonNormAct:
    """The ``norm_act_impl`` hook of :mod:`hrfast.models.blocks`, on :func:`norm_act`."""

    @staticmethod
    def applies(bn: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> bool:
        return applies(bn, x, residual)

    def __call__(self, x, bn, residual=None, relu=True):
        return norm_act(x, bn, residual, relu)


def norm_act_for(device: torch.device):
    """The ``norm_act_impl`` hook for a model on ``device``, or None where none runs:
    :class:`~hrfast.ops.bn_act.NormAct` (the native op) on the CPU, :class:`TritonNormAct` on
    CUDA."""
    if device.type == "cpu":
        return NormAct() if HAS_OP else None
    return TritonNormAct() if HAS_TRITON and triton_runs_on(device) else None


def install_norm_act(model: nn.Module, enabled: bool = True, impl=None) -> int:
    """Set (or, with ``enabled=False``, clear) the BN + ReLU hook of every block and stem of
    ``model``: ``impl``, or by default :func:`norm_act_for` the device of the model's
    parameters. Returns how many modules have it."""
    if enabled and impl is None:
        param = next(model.parameters(), None)
        impl = norm_act_for(param.device if param is not None else torch.device("cpu"))
    impl = impl if enabled else None
    mods = [m for m in model.modules() if hasattr(m, "norm_act_impl")]
    for m in mods:
        m.norm_act_impl = impl
    return len(mods) if impl is not None else 0
