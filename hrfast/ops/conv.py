"""3x3 convolution (padding 1, stride 1 or 2, no bias) with a fused epilogue, on Triton.

``conv3x3(x, weight, stride, scale, shift, add, relu)`` computes
``act(conv(x, weight) * scale + shift + add)``, each of scale/shift/add optional, as one
implicit-GEMM kernel (``kernels/conv.py``). ``conv3x3_ref`` is the eager twin. Gradients flow to
x, weight, add, and to scale/shift (those recompute the plain conv). The backward GEMMs are
Triton kernels too.

Shapes: x (B, Cin, H, W); weight (Cout, Cin, 3, 3); scale, shift (Cout,); add and the output
(B, Cout, Ho, Wo) with Ho = (H - 1) // stride + 1.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .fused_sum import _FLOATS, HAS_TRITON, _acc_dtype, triton_runs_on

if HAS_TRITON:
    import triton
    from torch.library import triton_op, wrap_triton

    from hrfast.kernels.conv import (CONV_CONFIGS, autotuned, conv3x3_dgrad_kernel, conv3x3_fwd_kernel,
                                     conv3x3_wgrad_kernel)
    _fwd_autotuned = autotuned(conv3x3_fwd_kernel)
    _dgrad_autotuned = autotuned(conv3x3_dgrad_kernel)
    _wgrad_autotuned = autotuned(conv3x3_wgrad_kernel)


def out_size(n: int, stride: int) -> int:
    return (n - 1) // stride + 1


def check_conv_args(x, weight, stride, scale, shift, add):
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor, got {getattr(t, 'shape', type(t).__name__)}")
        if t.dtype not in _FLOATS:
            raise TypeError(f"{name} must be float32/float16/bfloat16/float64, got {t.dtype}")
    B, Cin, H, W = x.shape
    if tuple(weight.shape[1:]) != (Cin, 3, 3):
        raise ValueError(f"weight must be (Cout, Cin, 3, 3) with Cin={Cin}, got {tuple(weight.shape)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    Cout = weight.shape[0]
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift must be given together")
    if scale is not None and (scale.shape != (Cout,) or shift.shape != (Cout,)):
        raise ValueError(f"scale and shift must be (Cout,) = ({Cout},), got {tuple(scale.shape)}, {tuple(shift.shape)}")
    Ho, Wo = out_size(H, stride), out_size(W, stride)
    if add is not None and tuple(add.shape) != (B, Cout, Ho, Wo):
        raise ValueError(f"add must be (B, Cout, Ho, Wo) = {(B, Cout, Ho, Wo)}, got {tuple(add.shape)}")
    for name, t in (("weight", weight), ("add", add), ("scale", scale)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, expected {x.device} like x")
    return B, Cin, H, W, Cout, Ho, Wo


def conv3x3_ref(x: torch.Tensor, weight: torch.Tensor, stride: int, scale: Optional[torch.Tensor] = None,
                shift: Optional[torch.Tensor] = None, add: Optional[torch.Tensor] = None,
                relu: bool = False) -> torch.Tensor:
    """Eager twin of :func:`conv3x3`."""
    check_conv_args(x, weight, stride, scale, shift, add)
    y = F.conv2d(x, weight, stride=stride, padding=1)
    if scale is not None:
        y = y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    if add is not None:
        y = y + add
    return torch.relu(y) if relu else y


def _launch_cfg(device: torch.device):
    return None if device.type == "cuda" else CONV_CONFIGS[0]


if HAS_TRITON:
    @triton_op("hrfast::conv3x3", mutates_args=())
    def _conv3x3_op(x: torch.Tensor, weight: torch.Tensor, stride: int, scale: Optional[torch.Tensor],
                    shift: Optional[torch.Tensor], add: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
        B, Cin, H, W = x.shape
        Cout = weight.shape[0]
        Ho, Wo = out_size(H, stride), out_size(W, stride)
        y = torch.empty((B, Cout, Ho, Wo), dtype=x.dtype, device=x.device)
        M = B * Ho * Wo
        dummy = y
        common = dict(STRIDE=stride, HAS_AFFINE=scale is not None, HAS_ADD=add is not None, RELU=bool(relu),
                      ACC=_acc_dtype(x.dtype))
        args = (x, weight, y, scale if scale is not None else dummy, shift if shift is not None else dummy,
                add if add is not None else dummy, B, Cin, H, W, Cout, Ho, Wo)
        cfg = _launch_cfg(x.device)
        if cfg is None:   # GPU: autotuned tiles
            grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(Cout, meta["BLOCK_N"]))  # noqa: E731
            wrap_triton(_fwd_autotuned)[grid](*args, **common)
        else:
            grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(Cout, cfg["BLOCK_N"]))
            wrap_triton(conv3x3_fwd_kernel)[grid](*args, **common, **cfg)
        return y


def _backward_impl(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int):
    """[grad_x (B, Cin, H, W), grad_w (Cout, Cin, 3, 3)] in the accumulation dtype."""
    B, Cin, H, W = x.shape
    Cout = weight.shape[0]
    Ho, Wo = grad.shape[2:]
    acc_t = torch.float64 if x.dtype == torch.float64 else torch.float32
    gx = torch.empty((B, Cin, H, W), dtype=acc_t, device=x.device)
    gw = torch.empty((Cout, Cin * 9), dtype=acc_t, device=x.device)
    acc = _acc_dtype(x.dtype)
    dargs = (grad, weight, gx, B, Cin, H, W, Cout, Ho, Wo)
    wargs = (grad, x, gw, B, Cin, H, W, Cout, Ho, Wo)
    cfg = _launch_cfg(x.device)
    if cfg is None:   # GPU: autotuned tiles
        wrap_triton(_dgrad_autotuned)[lambda m: (triton.cdiv(B * H * W, m["BLOCK_M"]), triton.cdiv(Cin, m["BLOCK_N"]))](
            *dargs, STRIDE=stride, ACC=acc)
        wrap_triton(_wgrad_autotuned)[lambda m: (triton.cdiv(Cout, m["BLOCK_M"]), triton.cdiv(Cin * 9, m["BLOCK_N"]))](
            *wargs, STRIDE=stride, ACC=acc)
    else:
        wrap_triton(conv3x3_dgrad_kernel)[(triton.cdiv(B * H * W, cfg["BLOCK_M"]), triton.cdiv(Cin, cfg["BLOCK_N"]))](
            *dargs, STRIDE=stride, ACC=acc, **cfg)
        wrap_triton(conv3x3_wgrad_kernel)[(triton.cdiv(Cout, cfg["BLOCK_M"]), triton.cdiv(Cin * 9, cfg["BLOCK_N"]))](
            *wargs, STRIDE=stride, ACC=acc, **cfg)
    return [gx, gw.view(Cout, Cin, 3, 3)]


if HAS_TRITON:
    from typing import List

    @triton_op("hrfast::conv3x3_backward", mutates_args=())
    def _conv3x3_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                             stride: int) -> List[torch.Tensor]:
        return _backward_impl(grad, x, weight, stride)

    def _setup_context(ctx, inputs, output):
        x, weight, stride, scale, shift, add, relu = inputs
        ctx.stride, ctx.relu = stride, relu
        ctx.has_add, ctx.has_affine = add is not None, scale is not None
        ctx.save_for_backward(x, weight, output, scale if scale is not None else output)

    def _backward(ctx, grad_y):
        x, weight, y, scale = ctx.saved_tensors
        g = grad_y * (y > 0) if ctx.relu else grad_y
        g_add = g if ctx.has_add else None
        g_scale = g_shift = None
        if ctx.has_affine:
            if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
                plain = torch.ops.hrfast.conv3x3(x, weight, ctx.stride, None, None, None, False)
                g_scale = (g * plain).sum((0, 2, 3)).to(scale.dtype)
                g_shift = g.sum((0, 2, 3)).to(scale.dtype)
            g = g * scale.view(1, -1, 1, 1)
        gx, gw = torch.ops.hrfast.conv3x3_backward(g.to(x.dtype).contiguous(), x, weight, ctx.stride)
        return gx.to(x.dtype), gw.to(weight.dtype), None, g_scale, g_shift, g_add, None

    _conv3x3_op.register_autograd(_backward, setup_context=_setup_context)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, scale: Optional[torch.Tensor] = None,
            shift: Optional[torch.Tensor] = None, add: Optional[torch.Tensor] = None,
            relu: bool = False) -> torch.Tensor:
    """``act(conv3x3(x, weight, stride, padding=1) * scale + shift + add)`` in one Triton kernel."""
    check_conv_args(x, weight, stride, scale, shift, add)
    if not HAS_TRITON:
        raise RuntimeError("conv3x3 needs Triton (pip install triton)")
    if not triton_runs_on(x.device):
        raise RuntimeError(f"conv3x3 runs on CUDA, or on the CPU only under TRITON_INTERPRET=1; got {x.device}")
    cast = lambda t: None if t is None else t.contiguous()  # noqa: E731
    return torch.ops.hrfast.conv3x3(x.contiguous(), weight.contiguous().to(x.dtype), int(stride), cast(scale),
                                    cast(shift), None if add is None else add.contiguous().to(x.dtype), bool(relu))
