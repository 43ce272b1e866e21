"""The fused exchange-unit sum: ``y = act(base + sum_k up_{F_k}(z_k * scale_k + shift_k))``.

``fused_sum`` is a ``torch.library.triton_op`` (``hrfast::fused_sum``) that launches
``kernels.exchange.fused_sum_fwd_kernel`` through ``wrap_triton``. Its backward is a second
triton_op (``hrfast::fused_sum_backward``, the masked block sums) plus low-resolution
reductions in PyTorch. ``fused_sum_ref`` is the eager twin with the same signature.

Shapes: ``base`` (B, C, H, W) or None. Each ``z_k`` is (B, C, ceil(H/F_k), ceil(W/F_k)), and
each ``scale_k`` / ``shift_k`` is (C,). ``factors`` are the nearest-upsampling factors
(1 = same resolution). At most ``MAX_TERMS`` = 3 terms per call; ``fused_sum_any`` chains
calls for more. Inputs are float32, float16, bfloat16 or float64 (the kernels accumulate in
float32, or in float64 for float64). They run on CUDA, or on the CPU in the Triton interpreter
(``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import torch

try:  # Triton is an optional dependency
    import triton  # noqa: F401
    from torch.library import triton_op, wrap_triton

    from hrfast.kernels.exchange import MAX_TERMS, block_size, fused_sum_bwd_kernel, fused_sum_fwd_kernel
    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised on machines without triton
    HAS_TRITON = False
    MAX_TERMS = 3

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA, or CPU under the interpreter."""
    if not HAS_TRITON:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def check_fused_sum_args(base, zs, scales, shifts, factors) -> torch.Size:
    """Validate; return the output shape (B, C, H, W). Errors name the argument."""
    if not (len(zs) == len(scales) == len(shifts) == len(factors)):
        raise ValueError(f"zs, scales, shifts and factors must have the same length, got "
                         f"{len(zs)}, {len(scales)}, {len(shifts)}, {len(factors)}")
    if base is None and not zs:
        raise ValueError("fused_sum needs a base or at least one term")
    if len(zs) > MAX_TERMS:
        raise ValueError(f"fused_sum takes at most {MAX_TERMS} terms, got {len(zs)} (use fused_sum_any)")
    ref = base if base is not None else zs[0]
    if ref.dim() != 4:
        raise ValueError(f"{'base' if base is not None else 'zs[0]'} must be (B, C, H, W), got {tuple(ref.shape)}")
    B, C = ref.shape[:2]
    if base is not None:
        H, W = base.shape[2:]
    else:
        H, W = zs[0].shape[2] * factors[0], zs[0].shape[3] * factors[0]
    for k, (z, s, t, f) in enumerate(zip(zs, scales, shifts, factors)):
        if int(f) < 1:
            raise ValueError(f"factors[{k}] must be >= 1, got {f}")
        want = (B, C, -(-H // f), -(-W // f))
        if tuple(z.shape) != want:
            raise ValueError(f"zs[{k}] must be (B, C, ceil(H/F), ceil(W/F)) = {want} for factor {f}, "
                             f"got {tuple(z.shape)}")
        if s.shape != (C,) or t.shape != (C,):
            raise ValueError(f"scales[{k}] and shifts[{k}] must be (C,) = ({C},), got "
                             f"{tuple(s.shape)} and {tuple(t.shape)}")
    for name, t in [("base", base)] + [(f"zs[{k}]", z) for k, z in enumerate(zs)]:
        if t is None:
            continue
        if t.dtype not in _FLOATS:
            raise TypeError(f"{name} must be float32/float16/bfloat16/float64, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device}, expected {ref.device} like the other inputs")
    return torch.Size((B, C, H, W))


def fused_sum_ref(base: Optional[torch.Tensor], zs: Sequence[torch.Tensor], scales: Sequence[torch.Tensor],
                  shifts: Sequence[torch.Tensor], factors: Sequence[int], relu: bool) -> torch.Tensor:
    """Eager twin of :func:`fused_sum` (materializes the upsampled terms)."""
    shape = check_fused_sum_args(base, zs, scales, shifts, factors)
    H, W = shape[2:]
    acc = base
    for z, s, t, f in zip(zs, scales, shifts, factors):
        term = z * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1)
        if f > 1:
            term = term.repeat_interleave(f, 2).repeat_interleave(f, 3)[:, :, :H, :W]
        acc = term if acc is None else acc + term
    return torch.relu(acc) if relu else acc


def _acc_dtype(dtype):
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


if HAS_TRITON:
    @triton_op("hrfast::fused_sum", mutates_args=())
    def _fused_sum_op(base: Optional[torch.Tensor], zs: List[torch.Tensor], scales: List[torch.Tensor],
                      shifts: List[torch.Tensor], factors: List[int], relu: bool) -> torch.Tensor:
        ref = base if base is not None else zs[0]
        B, C = ref.shape[:2]
        if base is not None:
            H, W = base.shape[2:]
        else:
            H, W = zs[0].shape[2] * factors[0], zs[0].shape[3] * factors[0]
        y = torch.empty((B, C, H, W), dtype=ref.dtype, device=ref.device)
        n = len(zs)
        dummy = y  # stands in for absent pointers (never read: N_TERMS guards every use)
        args = []
        for k in range(MAX_TERMS):
            if k < n:
                args += [zs[k], scales[k], shifts[k], zs[k].shape[2], zs[k].shape[3]]
            else:
                args += [dummy, dummy, dummy, 1, 1]
        fs = [int(factors[k]) if k < n else 1 for k in range(MAX_TERMS)]
        blk = block_size(H * W)
        grid = (B * C, triton.cdiv(H * W, blk))
        wrap_triton(fused_sum_fwd_kernel)[grid](
            y, base if base is not None else dummy, *args, C, H, W,
            HAS_BASE=base is not None, N_TERMS=n, F0=fs[0], F1=fs[1], F2=fs[2],
            RELU=bool(relu), ACC=_acc_dtype(y.dtype), BLOCK=blk)
        return y

    @triton_op("hrfast::fused_sum_backward", mutates_args=())
    def _fused_sum_backward_op(grad_y: torch.Tensor, y: torch.Tensor, zs: List[torch.Tensor],
                               factors: List[int], relu: bool) -> List[torch.Tensor]:
        """[masked grad (B, C, H, W)] + [block sums (B, C, H/F_k, W/F_k) per term], in the
        accumulation dtype (float32, or float64)."""
        B, C, H, W = y.shape
        acc_t = torch.float64 if y.dtype == torch.float64 else torch.float32
        outs = []
        for shape, f in [((H, W), 1)] + [(tuple(z.shape[2:]), int(f)) for z, f in zip(zs, factors)]:
            hk, wk = shape
            g = torch.empty((B, C, hk, wk), dtype=acc_t, device=y.device)
            blk = block_size(hk * wk)
            wrap_triton(fused_sum_bwd_kernel)[(B * C, triton.cdiv(hk * wk, blk))](
                g, grad_y, y, H, W, hk, wk, F=f, RELU=bool(relu), ACC=_acc_dtype(y.dtype), BLOCK=blk)
            outs.append(g)
        return outs

    def _setup_context(ctx, inputs, output):
        base, zs, scales, shifts, factors, relu = inputs
        ctx.has_base = base is not None
        ctx.factors, ctx.relu = list(factors), relu
        ctx.save_for_backward(output, *zs, *scales)

    def _backward(ctx, grad_y):
        y, *rest = ctx.saved_tensors
        n = len(ctx.factors)
        zs, scales = rest[:n], rest[n:]
        gs = torch.ops.hrfast.fused_sum_backward(grad_y.contiguous(), y, list(zs), ctx.factors, ctx.relu)
        g_base = gs[0].to(y.dtype) if ctx.has_base else None
        gz, gsc, gsh = [], [], []
        for z, s, gsum in zip(zs, scales, gs[1:]):
            gz.append((gsum * s.view(1, -1, 1, 1)).to(z.dtype))
            gsc.append((gsum * z).sum((0, 2, 3)).to(s.dtype))
            gsh.append(gsum.sum((0, 2, 3)).to(s.dtype))
        return g_base, gz, gsc, gsh, None, None

    _fused_sum_op.register_autograd(_backward, setup_context=_setup_context)


def fused_sum(base: Optional[torch.Tensor], zs: Sequence[torch.Tensor], scales: Sequence[torch.Tensor],
              shifts: Sequence[torch.Tensor], factors: Sequence[int], relu: bool) -> torch.Tensor:
    """``act(base + sum_k up_{F_k}(z_k * scale_k + shift_k))`` in one Triton kernel (see module doc).

    Differentiable w.r.t. base, every z_k, scale_k and shift_k."""
    check_fused_sum_args(base, zs, scales, shifts, factors)
    if not HAS_TRITON:
        raise RuntimeError("fused_sum needs Triton (pip install triton)")
    dev = (base if base is not None else zs[0]).device
    if not triton_runs_on(dev):
        raise RuntimeError(f"fused_sum runs on CUDA, or on the CPU only under TRITON_INTERPRET=1; "
                           f"got tensors on {dev}")
    dtype = (base if base is not None else zs[0]).dtype
    base = base.contiguous() if base is not None else None
    zs = [z.contiguous().to(dtype) for z in zs]
    scales = [s.contiguous() for s in scales]
    shifts = [t.contiguous() for t in shifts]
    return torch.ops.hrfast.fused_sum(base, zs, scales, shifts, [int(f) for f in factors], bool(relu))


def fused_sum_any(base, zs, scales, shifts, factors, relu: bool) -> torch.Tensor:
    """:func:`fused_sum` for any number of terms: chains calls of up to ``MAX_TERMS``, with the
    activation only on the last."""
    zs, scales, shifts, factors = list(zs), list(scales), list(shifts), list(factors)
    while len(zs) > MAX_TERMS:
        base = fused_sum(base, zs[:MAX_TERMS], scales[:MAX_TERMS], shifts[:MAX_TERMS],
                         factors[:MAX_TERMS], False)
        zs, scales, shifts, factors = (v[MAX_TERMS:] for v in (zs, scales, shifts, factors))
    return fused_sum(base, zs, scales, shifts, factors, relu)
