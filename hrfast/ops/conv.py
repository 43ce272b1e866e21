"""Convolutions of the exchange unit on Triton: several convs that read the same input, run as
one GEMM (grouped outputs), in NHWC or NCHW.

``conv(x, weights, stride, stats)`` computes ``[conv2d(x, w, stride, padding=(k-1)//2) for w in
weights]`` in one kernel: the weights' output channels are the GEMM's N axis, so the first
strided convs of every chain leaving a branch share each loaded input tile. With ``stats``, two
more outputs carry the per-tile (mean, M2) of every output channel, the train-mode BatchNorm
statistics (``hrfast.ops.batchnorm.bn_stats`` combines them), computed from the accumulator
without a second pass over the output. Differentiable with respect to x and every weight; the
backward is one launch of dgrad programs (per output-parity class for stride 2) and split-K
wgrad programs, then a sum of the split-K partials.

``convs(problems, stats)`` runs several such convs, each on its own input (the op
``hrfast::convs``; ``conv`` is one of them): one forward launch for all of them, one backward
launch (``convs_backward``; up to 6 convs a launch each way) and one deterministic sum of all
their split-K partials. The exchange unit's training plan makes each level's convs one call.
Kernels and launchers: ``kernels/fused_gemm.py``.

``conv_bn_act(x, weights, stride, ...)`` is the inference form: each group's BatchNorm (running
statistics) or folded bias and its optional ReLU are the GEMM's epilogue. Not differentiable;
``hrfast.ops.exchange`` uses it only when no gradient is needed.

Shapes: x (B, Cin, H, W); each weight (C_g, Cin, k, k) with k 1 or 3 (all the same); outputs
(B, C_g, Ho, Wo) in x's layout, Ho = (H - 1) // stride + 1. At most 3 weights.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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
    spans,
)

if HAS_TRITON:
    from ..kernels.fused_gemm import (
        ConvGrad,
        gemm_tiles,
        launch_conv_backward,
        launch_convs,
        launch_fused_gemm,
        launch_pack_weights,
        weight_grad_layout,
    )


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


def _problems(xs, weights, counts, strides, stats: bool) -> list:
    """(outputs, segment, statistics buffers or None) of each conv of the ``convs`` op."""
    return [(_outputs(x, weights[lo:hi], s), Segment(x, list(weights[lo:hi]), s),
             _stats_buffers(x, weights[lo:hi], s) if stats else None)
            for x, (lo, hi), s in zip(xs, spans(counts), strides)]


def _flat(problems) -> List[torch.Tensor]:
    """The op's outputs: each conv's outputs, then its statistics buffers."""
    return [t for outs, _, parts in problems for t in list(outs) + (parts or [])]


@torch.library.custom_op("hrfast::convs", mutates_args=())
def _convs_op(xs: List[torch.Tensor], weights: List[torch.Tensor], counts: List[int], strides: List[int],
              stats: bool, packed: List[torch.Tensor]) -> List[torch.Tensor]:
    """Conv k reads xs[k] with its counts[k] weights (flat list): its outputs, then with
    ``stats`` its two partials buffers, conv after conv. ``packed``: empty, or the weights in x's
    dtype and channels_last (``pack_weights``), which the kernels then read instead."""
    problems = _problems(xs, packed or weights, counts, strides, stats)
    launch_convs(problems)
    return _flat(problems)


@_convs_op.register_fake
def _(xs, weights, counts, strides, stats, packed):
    return _flat(_problems(xs, weights, counts, strides, stats))


@torch.library.custom_op("hrfast::convs_backward", mutates_args=())
def _convs_backward_op(grads: List[torch.Tensor], xs: List[torch.Tensor], weights: List[torch.Tensor],
                       counts: List[int], strides: List[int], need_x: bool) -> List[torch.Tensor]:
    """[grad of each x (empty when not needed)] + [one flat buffer of the convs' weight gradients,
    each an (N, k, k, Cin) block at ``weight_grad_layout``]; ``grads``: the outputs' gradients,
    flat like the weights. One launch for them all."""
    gxs, gw = launch_conv_backward([ConvGrad([g.to(x.dtype) for g in grads[lo:hi]], x, weights[lo:hi], s, need_x)
                                    for x, (lo, hi), s in zip(xs, spans(counts), strides)])
    return gxs + [gw]


@_convs_backward_op.register_fake
def _(grads, xs, weights, counts, strides, need_x):
    gxs = [empty_like_layout(x, x.shape) if need_x else x.new_empty(0) for x in xs]
    _, length = weight_grad_layout([weights[lo:hi] for lo, hi in spans(counts)])
    return gxs + [xs[0].new_empty((length,), dtype=acc_dtype(xs[0].dtype))]


def _convs_setup(ctx, inputs, output):
    xs, weights, counts, strides, stats, packed = inputs
    ctx.counts, ctx.strides, ctx.stats = list(counts), list(strides), bool(stats)
    ctx.dtypes = [w.dtype for w in weights]    # the parameters' (packed copies may differ)
    ctx.n_packed = len(packed)
    if stats:   # the statistics are not differentiated (module doc)
        at = 0
        for n in counts:
            ctx.mark_non_differentiable(*output[at + n:at + n + 2])
            at += n + 2
    ctx.n = len(xs)
    ctx.save_for_backward(*xs, *(packed or weights))   # dgrad reads the weights the forward read


def _convs_backward(ctx, grads):
    xs, weights = ctx.saved_tensors[:ctx.n], ctx.saved_tensors[ctx.n:]
    flat, at = [], 0
    for x, (lo, hi), s in zip(xs, spans(ctx.counts), ctx.strides):
        gs = list(grads[at:at + hi - lo])
        if any(g is None for g in gs):   # an unused output: its gradient is zero
            gs = [g if g is not None else torch.zeros_like(o) for g, o in zip(gs, _outputs(x, weights[lo:hi], s))]
        flat += gs
        at += hi - lo + (2 if ctx.stats else 0)
    need_x = bool(ctx.needs_input_grad[0])
    outs = torch.ops.hrfast.convs_backward(flat, list(xs), list(weights), ctx.counts, ctx.strides, need_x)
    layout, _ = weight_grad_layout([weights[lo:hi] for lo, hi in spans(ctx.counts)])
    gws = []
    for (at, shape), (lo, hi) in zip(layout, spans(ctx.counts)):   # (N, k, k, Cin) -> each (C_g, Cin, k, k)
        gw = outs[-1][at:at + shape[0] * shape[1] * shape[2] * shape[3]].view(shape)
        row = 0
        for w in weights[lo:hi]:     # a view in channels_last order
            gws.append(gw[row:row + w.shape[0]].permute(0, 3, 1, 2).to(ctx.dtypes[len(gws)]))
            row += w.shape[0]
    return (list(outs[:ctx.n]) if need_x else None), gws, None, None, None, [None] * ctx.n_packed


_convs_op.register_autograd(_convs_backward, setup_context=_convs_setup)


def convs(problems: Sequence[Tuple[torch.Tensor, Sequence[torch.Tensor], int]], stats: bool = False,
          packed: Optional[Sequence[Sequence[torch.Tensor]]] = None) -> List[List[torch.Tensor]]:
    """:func:`conv` of several ``(x, weights, stride)``, each x its own input: one forward launch
    for them all, and one backward launch (plus one sum of their split-K partials).
    ``packed``: per problem, its weights from :func:`pack_weights`, which the kernels read in
    place of the weights (the gradients still go to the weights, in their dtype)."""
    for x, weights, stride in problems:
        check_conv_args(x, weights, stride)
    require_triton(problems[0][0].device, "conv")
    flat_packed = [p.detach() for ps in packed for p in ps] if packed else []
    flat = torch.ops.hrfast.convs([p[0] for p in problems], [w for p in problems for w in p[1]],
                                  [len(p[1]) for p in problems], [int(p[2]) for p in problems], bool(stats),
                                  flat_packed)
    return [list(flat[lo:hi]) for lo, hi in spans(len(p[1]) + (2 if stats else 0) for p in problems)]


@torch.library.custom_op("hrfast::pack_weights", mutates_args=())
def _pack_weights_op(weights: List[torch.Tensor], dtype: torch.dtype) -> List[torch.Tensor]:
    return launch_pack_weights(weights, dtype)


@_pack_weights_op.register_fake
def _(weights, dtype):
    return [torch.empty(w.shape, dtype=dtype, device=w.device, memory_format=torch.channels_last) for w in weights]


def pack_weights(weights: Sequence[torch.Tensor], dtype: torch.dtype) -> List[torch.Tensor]:
    """Conv weights in ``dtype`` and channels_last, one launch for up to 16 of them, for
    :func:`convs`'s ``packed``: under autocast the kernels would otherwise read the float32
    parameters and narrow them in every tile, 4 bytes at a time (an NCHW 3x3 weight has its
    input channels 9 elements apart). Not differentiable: the weights' gradients go to the
    parameters through ``convs``. The twin is ``w.to(dtype, memory_format=torch.channels_last)``."""
    require_triton(weights[0].device, "pack_weights")
    return torch.ops.hrfast.pack_weights([w.detach() for w in weights], dtype)


def conv(x: torch.Tensor, weights: Sequence[torch.Tensor], stride: int = 1,
         stats: bool = False) -> List[torch.Tensor]:
    """One output per weight (see the module doc); with ``stats``, followed by the (P, N)
    partial means and M2 of all output channels. Differentiable in x and the weights."""
    return convs([(x, weights, stride)], stats)[0]


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
