"""Convolutions of the exchange unit on Triton: several convs that read the same input, run as
one GEMM (grouped outputs), in NHWC or NCHW.

``conv(x, weights, stride, stats)`` computes ``[conv2d(x, w, stride, padding=(k-1)//2) for w in
weights]`` in one kernel: the weights' output channels are the GEMM's N axis, so the first
strided convs of every chain leaving a branch share each loaded input tile. With ``stats``, two
more outputs carry the per-tile (mean, M2) of every output channel, the train-mode BatchNorm
statistics (``hrfast.ops.batchnorm.bn_stats`` combines them), computed from the accumulator
without a second pass over the output. Differentiable with respect to x and every weight; the
backward is a dgrad kernel (per output-parity class for stride 2) and a split-K wgrad kernel.
Kernels and launchers: ``kernels/fused_gemm.py``.

``conv_bn_act(x, weights, stride, ...)`` is the inference form: each group's BatchNorm (running
statistics) or folded bias and its optional ReLU are the GEMM's epilogue. Not differentiable;
``hrfast.ops.exchange`` uses it only when no gradient is needed.

Shapes: x (B, Cin, H, W); each weight (C_g, Cin, k, k) with k 1 or 3 (all the same); outputs
(B, C_g, Ho, Wo) in x's layout, Ho = (H - 1) // stride + 1. At most 3 weights.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from ..kernels.launch import (
    FLOATS,
    HAS_TRITON,
    MAX_GROUPS,
    Affine,
    AffineMode,
    Segment,
    acc_dtype,
    affine_lists,
    empty_like_layout,
    require_triton,
)

if HAS_TRITON:
    from ..kernels.fused_gemm import gemm_tiles, launch_conv_backward, launch_fused_gemm


def out_size(n: int, stride: int) -> int:
    return (n - 1) // stride + 1


def check_conv_args(x, weights, stride) -> None:
    """Raise a ValueError/TypeError naming the argument."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (B, Cin, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype not in FLOATS:
        raise TypeError(f"x must be float32/float16/bfloat16/float64, got {x.dtype}")
    if not 1 <= len(weights) <= MAX_GROUPS:
        raise ValueError(f"weights must hold 1 to {MAX_GROUPS} tensors, got {len(weights)}")
    k = weights[0].shape[-1] if weights[0].dim() == 4 else None
    for g, w in enumerate(weights):
        if w.dim() != 4 or tuple(w.shape[1:]) != (x.shape[1], k, k) or k not in (1, 3):
            raise ValueError(f"weights[{g}] must be (C_g, Cin={x.shape[1]}, k, k) with k 1 or 3 for all, "
                             f"got {tuple(w.shape)}")
        if w.device != x.device:
            raise ValueError(f"weights[{g}] is on {w.device}, expected {x.device} like x")
        if w.dtype not in FLOATS:
            raise TypeError(f"weights[{g}] must be a float tensor, got {w.dtype}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")


def _outputs(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int) -> List[torch.Tensor]:
    B, _, H, W = x.shape
    return [empty_like_layout(x, (B, w.shape[0], out_size(H, stride), out_size(W, stride))) for w in weights]


def _stats_buffers(x: torch.Tensor, weights, stride: int) -> List[torch.Tensor]:
    B, Cin, H, W = x.shape
    M = B * out_size(H, stride) * out_size(W, stride)
    N = sum(w.shape[0] for w in weights)
    P = -(-M // gemm_tiles(M, N, Cin, x.device)["BLOCK_M"])
    return [torch.empty((P, N), dtype=acc_dtype(x.dtype), device=x.device) for _ in range(2)]


def conv_ref(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int = 1) -> List[torch.Tensor]:
    """Eager twin of :func:`conv` (without the statistics)."""
    check_conv_args(x, weights, stride)
    k = weights[0].shape[-1]
    return [F.conv2d(x, w.to(x.dtype), stride=stride, padding=(k - 1) // 2) for w in weights]


@torch.library.custom_op("hrfast::conv", mutates_args=())
def _conv_op(x: torch.Tensor, weights: List[torch.Tensor], stride: int, stats: bool) -> List[torch.Tensor]:
    outs = _outputs(x, weights, stride)
    parts = _stats_buffers(x, weights, stride) if stats else None
    launch_fused_gemm(outs, [Segment(x, list(weights), stride)], relu=[False] * len(outs), stats=parts)
    return outs + (parts or [])


@_conv_op.register_fake
def _(x, weights, stride, stats):
    return _outputs(x, weights, stride) + (_stats_buffers(x, weights, stride) if stats else [])


@torch.library.custom_op("hrfast::conv_backward", mutates_args=())
def _conv_backward_op(grads: List[torch.Tensor], x: torch.Tensor, weights: List[torch.Tensor], stride: int,
                      need_x: bool) -> List[torch.Tensor]:
    return launch_conv_backward([g.to(x.dtype) for g in grads], x, weights, stride, need_x)


@_conv_backward_op.register_fake
def _(grads, x, weights, stride, need_x):
    ks = weights[0].shape[-1]
    gx = empty_like_layout(x, x.shape) if need_x else x.new_empty(0)
    return [gx, x.new_empty((sum(w.shape[0] for w in weights), ks, ks, x.shape[1]), dtype=acc_dtype(x.dtype))]


def _conv_setup(ctx, inputs, output):
    x, weights, stride, stats = inputs
    ctx.stride, ctx.groups = stride, len(weights)
    if stats:   # the statistics are not differentiated (module doc)
        ctx.mark_non_differentiable(*output[len(weights):])
    ctx.save_for_backward(x, *weights)


def _conv_backward(ctx, grads):
    x, *weights = ctx.saved_tensors
    G = ctx.groups
    gs = list(grads[:G])
    if any(g is None for g in gs):   # an unused group: its gradient is zero
        gs = [g if g is not None else torch.zeros_like(o) for g, o in zip(gs, _outputs(x, weights, ctx.stride))]
    gx, gw = torch.ops.hrfast.conv_backward(gs, x, list(weights), ctx.stride, ctx.needs_input_grad[0])
    gws, lo = [], 0
    for w in weights:   # (N, k, k, Cin) -> each (C_g, Cin, k, k), a view in channels_last order
        gws.append(gw[lo:lo + w.shape[0]].permute(0, 3, 1, 2).to(w.dtype))
        lo += w.shape[0]
    return (gx if ctx.needs_input_grad[0] else None), gws, None, None


_conv_op.register_autograd(_conv_backward, setup_context=_conv_setup)


def conv(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int = 1,
         stats: bool = False) -> List[torch.Tensor]:
    """One output per weight (see the module doc); with ``stats``, followed by the (P, N)
    partial means and M2 of all output channels. Differentiable in x and the weights."""
    check_conv_args(x, weights, stride)
    require_triton(x.device, "conv")
    return torch.ops.hrfast.conv(x, list(weights), int(stride), bool(stats))



def conv_bn_act_ref(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int, affines: Sequence[Affine],
                    relu: Sequence[bool]) -> List[torch.Tensor]:
    """Eager twin of :func:`conv_bn_act`."""
    outs = []
    for z, a, r in zip(conv_ref(x, weights, stride), affines, relu):
        if a.mode == AffineMode.BATCHNORM:
            z = F.batch_norm(z, a.mean, a.var, a.weight, a.bias, False, 0.0, a.eps)
        elif a.mode == AffineMode.BIAS:
            z = z + a.bias.view(1, -1, 1, 1).to(z.dtype)
        outs.append(torch.relu(z) if r else z)
    return outs


@torch.library.custom_op("hrfast::conv_bn_act", mutates_args=())
def _conv_bn_act_op(x: torch.Tensor, weights: List[torch.Tensor], stride: int, bn_weight: List[torch.Tensor],
                    bn_bias: List[torch.Tensor], bn_mean: List[torch.Tensor],
                    bn_var: List[torch.Tensor], eps: List[float], relu: List[bool]) -> List[torch.Tensor]:
    outs = _outputs(x, weights, stride)
    affines = [Affine.from_lists(bn_weight, bn_bias, bn_mean, bn_var, eps, g) for g in range(len(weights))]
    launch_fused_gemm(outs, [Segment(x, list(weights), stride, affines=affines)], relu=relu)
    return outs


@_conv_bn_act_op.register_fake
def _(x, weights, stride, bn_weight, bn_bias, bn_mean, bn_var, eps, relu):
    return _outputs(x, weights, stride)


def conv_bn_act(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int, affines: Sequence[Affine],
                relu: Sequence[bool]) -> List[torch.Tensor]:
    """``[act_g(affine_g(conv2d(x, w_g)))]`` in one kernel; inference only (no autograd).
    Every affine has the same mode (all BatchNorm, all bias, or none)."""
    check_conv_args(x, weights, stride)
    require_triton(x.device, "conv_bn_act")
    if len(affines) != len(weights) or len(relu) != len(weights):
        raise ValueError(f"affines and relu need one entry per weight ({len(weights)}), got "
                         f"{len(affines)} and {len(relu)}")
    if len({a.mode for a in affines}) != 1:
        raise ValueError("conv_bn_act: all groups must have the same kind of affine")
    return torch.ops.hrfast.conv_bn_act(x, list(weights), int(stride), *affine_lists(affines, x),
                                        [bool(r) for r in relu])
