"""Triton kernels of the fused backward of one output branch's sum, and their launchers
(``hrfast.ops.branch_sum`` registers the op ``branch_sum_backward`` that calls them).

Backward of one term ``u = up_F(BN(z))`` of ``y = act(base + sum of terms)``, with
``g = grad_y * (y > 0)`` and ``gsum`` the F x F block sums of g at z's resolution::

    dbias = sum gsum,    dweight = sum gsum * xhat,    xhat = (z - mean) / sqrt(var + eps)
    dz = w / sqrt(var + eps) * (gsum - (dbias + xhat * dweight) / n)     (batch statistics)
    dz = w / sqrt(var + eps) * gsum                                      (running statistics)

Views and affines follow ``kernels/fused_gemm.py``.
"""
import torch
import triton
import triton.language as tl

from .fused_gemm import _index, _narrow, _rows, _split_pixels
from .launch import (
    Affine,
    AffineMode,
    acc_dtype,
    block_rows,
    empty_like_layout,
    needs_int64,
    on_gpu,
    record_launch,
    tl_dtype,
    view,
)


@triton.jit
def relu_mask_kernel(g, gy, y, numel, IDX64: tl.constexpr, BLOCK: tl.constexpr):
    """g = gy where y > 0 else 0, over one dense buffer (gy and y share their strides)."""
    offs = _index(tl.program_id(0), IDX64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    yv = tl.load(y + offs, mask=ok, other=0.0)
    gv = tl.load(gy + offs, mask=ok, other=0.0)
    tl.store(g + offs, tl.where(yv > 0, gv, 0.0).to(g.dtype.element_ty), mask=ok)


@triton.jit
def _inv_std(aff, c, c_ok, ACC: tl.constexpr):
    var = tl.load(aff[3] + c, mask=c_ok, other=1.0).to(ACC)
    return 1.0 / tl.sqrt(var + aff[4])


@triton.jit
def term_bwd_reduce_kernel(g, z, gsum, aff, parts, B, H, W, Hk, Wk, C,
                           F: tl.constexpr, AFF: tl.constexpr, STORE: tl.constexpr, ACC: tl.constexpr,
                           IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """For one BN term at resolution (Hk, Wk) = ceil((H, W) / F): gsum = F x F block sums of
    the masked output gradient g (stored when STORE), and per tile the partial sums of gsum and,
    for a BN (AFF == 2), of gsum * xhat. ``parts``: two (P, C) buffers."""
    pid_m = tl.program_id(0)
    offs = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pix_ok = offs < B * Hk * Wk
    c_ok = c < C
    mask = pix_ok[:, None] & c_ok[None, :]
    b, hk, wk = _split_pixels(offs, Hk, Wk)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC)
    for dy in tl.static_range(F):
        for dx in tl.static_range(F):
            h = hk * F + dy
            w = wk * F + dx
            ok = pix_ok & (h < H) & (w < W)
            acc += tl.load(g[0] + _rows(g, b, h, w)[:, None] + c[None, :] * g[2],
                           mask=ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
    if STORE:
        tl.store(gsum[0] + _rows(gsum, b, hk, wk)[:, None] + c[None, :] * gsum[2],
                 _narrow(acc, gsum[0].dtype.element_ty), mask=mask)
    tl.store(parts[0] + pid_m * C + c, tl.sum(acc, axis=0), mask=c_ok)
    if AFF == 2:
        zv = tl.load(z[0] + _rows(z, b, hk, wk)[:, None] + c[None, :] * z[2], mask=mask, other=0.0).to(ACC)
        mean = tl.load(aff[2] + c, mask=c_ok, other=0.0).to(ACC)
        xhat = (zv - mean[None, :]) * _inv_std(aff, c, c_ok, ACC)[None, :]
        tl.store(parts[1] + pid_m * C + c, tl.sum(tl.where(mask, acc * xhat, 0.0), axis=0), mask=c_ok)


@triton.jit
def sum_rows_kernel(parts, P, C, outs, NP: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """outs[k][c] = sum over p of parts[k][p, c] for the first NP of the (P, C) buffers
    (``outs`` are (dbias, dweight) of a BN term, dweight only for NP = 2)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    for k in tl.static_range(NP):
        acc = tl.zeros([BLOCK_C], dtype=ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            acc += tl.sum(tl.load(parts[k] + p[:, None] * C + c[None, :],
                                  mask=(p < P)[:, None] & c_ok[None, :], other=0.0), axis=0)
        tl.store(outs[k] + c, _narrow(acc, outs[k].dtype.element_ty), mask=c_ok)


@triton.jit
def bn_bwd_apply_kernel(gsum, z, dz, aff, dbias, dweight, B, Hk, Wk, C,
                        BATCH: tl.constexpr, ACC: tl.constexpr, IDX64: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dz of a BN term (module doc); ``dbias``/``dweight`` are the summed partials."""
    offs = _index(tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pix_ok = offs < B * Hk * Wk
    c_ok = c < C
    mask = pix_ok[:, None] & c_ok[None, :]
    b, hk, wk = _split_pixels(offs, Hk, Wk)
    gs = tl.load(gsum[0] + _rows(gsum, b, hk, wk)[:, None] + c[None, :] * gsum[2], mask=mask, other=0.0).to(ACC)
    inv = _inv_std(aff, c, c_ok, ACC)
    w = tl.load(aff[0] + c, mask=c_ok, other=0.0).to(ACC)
    if BATCH:
        n = B * Hk * Wk
        zv = tl.load(z[0] + _rows(z, b, hk, wk)[:, None] + c[None, :] * z[2], mask=mask, other=0.0).to(ACC)
        mean = tl.load(aff[2] + c, mask=c_ok, other=0.0).to(ACC)
        xhat = (zv - mean[None, :]) * inv[None, :]
        db = tl.load(dbias + c, mask=c_ok, other=0.0).to(ACC)
        dw = tl.load(dweight + c, mask=c_ok, other=0.0).to(ACC)
        gs = gs - (db[None, :] + xhat * dw[None, :]) / n
    out = gs * (w * inv)[None, :]
    tl.store(dz[0] + _rows(dz, b, hk, wk)[:, None] + c[None, :] * dz[2], _narrow(out, dz[0].dtype.element_ty),
             mask=mask)


# ------------------------------------------------------------------------------------- launchers
def launch_relu_mask(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad where y > 0, else 0 (in y's layout)."""
    if grad.stride() != y.stride():
        grad = grad.contiguous(memory_format=torch.channels_last if y.dim() == 4 and
                               y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
    g = torch.empty_like(grad)
    blk = 1024 if on_gpu(y.device) else 256
    record_launch()
    relu_mask_kernel[(triton.cdiv(y.numel(), blk),)](g, grad, y, y.numel(), needs_int64(y), BLOCK=blk)
    return g


def _row_tiles(M: int, C: int, device: torch.device):
    bm = 64
    bc = block_rows(C, 64 if on_gpu(device) else 32)
    return bm, bc, (triton.cdiv(M, bm), triton.cdiv(C, bc))


def launch_term_backward(g: torch.Tensor, z: torch.Tensor, f: int, a: Affine, batch: bool, dweight: torch.Tensor,
                         dbias: torch.Tensor) -> torch.Tensor:
    """dz of one term ``up_f(a(z))`` for the masked gradient g at y's resolution; the affine's
    weight and bias gradients are written into ``dweight`` and ``dbias`` (zero where the
    affine has no such parameter). ``batch``: a's mean and var are z's batch statistics."""
    B, C, Hk, Wk = z.shape
    H, W = g.shape[2:]
    acc_t = acc_dtype(z.dtype)
    mode = a.mode
    if mode != AffineMode.BATCHNORM:
        dweight.zero_()
    if mode == AffineMode.NONE:
        dbias.zero_()
        if f == 1:
            return g.to(z.dtype).clone()
    gsum = g if f == 1 else empty_like_layout(z, z.shape, dtype=acc_t if mode == AffineMode.BATCHNORM else z.dtype)
    bm, bc, grid = _row_tiles(B * Hk * Wk, C, z.device)
    parts = [torch.empty((grid[0], C), dtype=acc_t, device=z.device) for _ in range(2)]
    dummy = parts[0]
    big = needs_int64(g, z)
    record_launch()
    term_bwd_reduce_kernel[grid](view(g), view(z), view(gsum), a.args(dummy), tuple(parts), B, H, W, Hk, Wk, C,
                                 f, int(mode), f > 1, tl_dtype(z.dtype), big, BLOCK_M=bm, BLOCK_C=bc)
    if mode == AffineMode.NONE:
        return gsum
    blk = block_rows(C, 128)
    record_launch()
    sum_rows_kernel[(triton.cdiv(C, blk),)](tuple(parts), grid[0], C, (dbias, dweight), int(mode), tl_dtype(z.dtype),
                                            BLOCK_P=32, BLOCK_C=blk)
    if mode == AffineMode.BIAS:
        return gsum if f > 1 else g.to(z.dtype).clone()
    dz = empty_like_layout(z, z.shape)
    record_launch()
    bn_bwd_apply_kernel[grid](view(gsum), view(z), view(dz), a.args(dummy), dbias, dweight, B, Hk, Wk, C,
                              bool(batch), tl_dtype(z.dtype), big, BLOCK_M=bm, BLOCK_C=bc)
    return dz
