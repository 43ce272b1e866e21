"""Triton kernels of the fused backward of one output branch's sum, and their launchers
(``hrfast.ops.branch_sum`` registers the op ``branch_sum_backward`` that calls them).

Backward of one term ``u = up_F(BN(z))`` of ``y = act(base + sum of terms)``, with
``g = grad_y * (y > 0)`` and ``gsum`` the F x F block sums of g at z's resolution::

    dbias = sum gsum,    dweight = sum gsum * xhat,    xhat = (z - mean) / sqrt(var + eps)
    dz = w / sqrt(var + eps) * (gsum - (dbias + xhat * dweight) / n)     (batch statistics)
    dz = w / sqrt(var + eps) * gsum                                      (running statistics)

Views and affines follow ``kernels/fused_gemm.py``.
"""
from typing import List, Optional, Sequence

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
def _term_reduce(pid_m, g, z, gsum, aff, parts, y, B, H, W, Hk, Wk, C,
                 F: tl.constexpr, AFF: tl.constexpr, STORE: tl.constexpr, MASK: tl.constexpr, ACC: tl.constexpr,
                 IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """For one term at resolution (Hk, Wk) = ceil((H, W) / F), tile pid_m: gsum = F x F block
    sums of the masked output gradient g (stored when STORE), and the tile's partial sums of
    gsum and, for a BN (AFF == 2), of gsum * xhat. ``parts``: two (P, C) buffers. ``MASK``: g
    is the raw gradient, masked here by y > 0 (the ReLU's, with F = 1)."""
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
            v = tl.load(g[0] + _rows(g, b, h, w)[:, None] + c[None, :] * g[2],
                        mask=ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
            if MASK:
                yv = tl.load(y[0] + _rows(y, b, h, w)[:, None] + c[None, :] * y[2],
                             mask=ok[:, None] & c_ok[None, :], other=0.0)
                v = tl.where(yv > 0, v, 0.0)
            acc += v
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
def terms_reduce_kernel(ts, y, B, C, K: tl.constexpr, MASK: tl.constexpr,
                        F0: tl.constexpr, A0: tl.constexpr, S0: tl.constexpr,
                        F1: tl.constexpr, A1: tl.constexpr, S1: tl.constexpr,
                        F2: tl.constexpr, A2: tl.constexpr, S2: tl.constexpr,
                        ACC: tl.constexpr, IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_term_reduce` of up to 3 terms in one launch, term = program_id(2); each term
    ``(g, z, gsum, affine, parts, H, W, Hk, Wk)``, its tiles the first ceil(B Hk Wk / BLOCK_M)
    of axis 0 (the grid has the largest term's)."""
    pid_m = tl.program_id(0)
    t = tl.program_id(2)
    if t == 0:
        _reduce_slot(pid_m, ts[0], y, B, C, F0, A0, S0, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)
    if K > 1:
        if t == 1:
            _reduce_slot(pid_m, ts[1], y, B, C, F1, A1, S1, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)
    if K > 2:
        if t == 2:
            _reduce_slot(pid_m, ts[2], y, B, C, F2, A2, S2, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)


@triton.jit
def _reduce_slot(pid_m, a, y, B, C, F: tl.constexpr, AFF: tl.constexpr, STORE: tl.constexpr, MASK: tl.constexpr,
                 ACC: tl.constexpr, IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """One term's slot of :func:`terms_reduce_kernel`: its tile pid_m, if it has one."""
    if pid_m * BLOCK_M < B * a[7] * a[8]:
        _term_reduce(pid_m, a[0], a[1], a[2], a[3], a[4], y, B, a[5], a[6], a[7], a[8], C, F, AFF, STORE, MASK, ACC,
                     IDX64, BLOCK_M, BLOCK_C)


@triton.jit
def _sum_rows(parts, P, C, outs, NP: tl.constexpr, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """outs[k][c] = sum over p of parts[k][p, c] for the first NP of the (P, C) buffers
    (``outs`` are (dbias, dweight) of a term, dweight only for NP = 2)."""
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
def terms_sum_rows_kernel(ts, C, K: tl.constexpr, NP0: tl.constexpr, NP1: tl.constexpr, NP2: tl.constexpr,
                          ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_sum_rows` of up to 3 terms, term = program_id(1); each ``(parts, P, outs)``."""
    t = tl.program_id(1)
    if t == 0:
        _sum_rows(ts[0][0], ts[0][1], C, ts[0][2], NP0, ACC, BLOCK_P, BLOCK_C)
    if K > 1:
        if t == 1:
            _sum_rows(ts[1][0], ts[1][1], C, ts[1][2], NP1, ACC, BLOCK_P, BLOCK_C)
    if K > 2:
        if t == 2:
            _sum_rows(ts[2][0], ts[2][1], C, ts[2][2], NP2, ACC, BLOCK_P, BLOCK_C)


@triton.jit
def terms_bn_apply_kernel(ts, y, B, C, K: tl.constexpr, MASK: tl.constexpr,
                          BT0: tl.constexpr, BT1: tl.constexpr, BT2: tl.constexpr,
                          ACC: tl.constexpr, IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_bn_apply` of up to 3 BN terms, term = program_id(2); each ``(gsum, z, dz,
    affine, dbias, dweight, Hk, Wk)``, tiled as in :func:`terms_reduce_kernel`."""
    pid_m = tl.program_id(0)
    t = tl.program_id(2)
    if t == 0:
        _apply_slot(pid_m, ts[0], y, B, C, BT0, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)
    if K > 1:
        if t == 1:
            _apply_slot(pid_m, ts[1], y, B, C, BT1, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)
    if K > 2:
        if t == 2:
            _apply_slot(pid_m, ts[2], y, B, C, BT2, MASK, ACC, IDX64, BLOCK_M, BLOCK_C)


@triton.jit
def _apply_slot(pid_m, a, y, B, C, BATCH: tl.constexpr, MASK: tl.constexpr, ACC: tl.constexpr, IDX64: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """One BN term's slot of :func:`terms_bn_apply_kernel`: its tile pid_m, if it has one."""
    if pid_m * BLOCK_M < B * a[6] * a[7]:
        _bn_apply(pid_m, a[0], a[1], a[2], a[3], a[4], a[5], y, B, a[6], a[7], C, BATCH, MASK, ACC, IDX64, BLOCK_M,
                  BLOCK_C)


@triton.jit
def _bn_apply(pid_m, gsum, z, dz, aff, dbias, dweight, y, B, Hk, Wk, C,
              BATCH: tl.constexpr, MASK: tl.constexpr, ACC: tl.constexpr, IDX64: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dz of a BN term, tile pid_m (module doc); ``dbias``/``dweight`` are the summed partials.
    ``MASK``: gsum is the raw gradient at z's resolution, masked here by y > 0."""
    offs = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pix_ok = offs < B * Hk * Wk
    c_ok = c < C
    mask = pix_ok[:, None] & c_ok[None, :]
    b, hk, wk = _split_pixels(offs, Hk, Wk)
    gs = tl.load(gsum[0] + _rows(gsum, b, hk, wk)[:, None] + c[None, :] * gsum[2], mask=mask, other=0.0).to(ACC)
    if MASK:
        yv = tl.load(y[0] + _rows(y, b, hk, wk)[:, None] + c[None, :] * y[2], mask=mask, other=0.0)
        gs = tl.where(yv > 0, gs, 0.0)
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


def launch_terms_backward(gs: Sequence[torch.Tensor], zs: Sequence[torch.Tensor], fs: Sequence[int],
                          affines: Sequence[Affine], batch: Sequence[bool], dweights: torch.Tensor,
                          dbiases: torch.Tensor, relu_of: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """dz of each term ``up_f(a(z))`` of one output branch, for its masked gradient g (at y's
    resolution, or at z's with f = 1 for a term whose upsample the caller transposed): three
    launches for all the terms together (block sums and partials; row sums; the BN's dz), at
    most 3 terms. Row k of ``dweights`` / ``dbiases`` (K, C) receives term k's affine
    gradients, zero where the affine has no such parameter. ``batch[k]``: a's mean and var are
    z's batch statistics. ``relu_of``: the gradients are the raw ones of ``act(sum)`` = y, masked
    by y > 0 inside the kernels instead of by a launch of their own (every term a BN at F = 1)."""
    K = len(zs)
    assert 1 <= K <= 3 and len(gs) == len(fs) == len(affines) == len(batch) == K
    modes = [a.mode for a in affines]
    if relu_of is not None:
        assert all(f == 1 for f in fs) and all(m == AffineMode.BATCHNORM for m in modes)
    for k, m in enumerate(modes):     # rows the kernels do not write
        if m != AffineMode.BATCHNORM:
            dweights[k].zero_()
        if m == AffineMode.NONE:
            dbiases[k].zero_()
    B, C = zs[0].shape[:2]
    acc_t = acc_dtype(zs[0].dtype)
    bm, bc, _ = _row_tiles(1, C, zs[0].device)
    gsums = [g if f == 1 else empty_like_layout(z, z.shape, dtype=acc_t if m == AffineMode.BATCHNORM else z.dtype)
             for g, z, f, m in zip(gs, zs, fs, modes)]
    parts = [[torch.empty((triton.cdiv(B * z.shape[2] * z.shape[3], bm), C), dtype=acc_t, device=z.device)
              for _ in range(2)] for z in zs]
    yv = view(relu_of if relu_of is not None else zs[0])
    tiles = (bm, bc, yv, relu_of is not None, needs_int64(*gs, *zs))
    # 1. block sums and partials: every term but a plain one at full resolution
    _reduce_launch([k for k in range(K) if not (modes[k] == AffineMode.NONE and fs[k] == 1)], gs, zs, gsums, fs,
                   affines, parts, tiles)
    # 2. the affine gradients: row sums of the partials
    rows = [k for k in range(K) if modes[k] != AffineMode.NONE]
    if rows:
        blk = block_rows(C, 128)
        ts = tuple((tuple(parts[k]), parts[k][0].shape[0], (dbiases[k], dweights[k])) for k in rows)
        nps = [2 if modes[k] == AffineMode.BATCHNORM else 1 for k in rows] + [0] * (3 - len(rows))
        record_launch()
        terms_sum_rows_kernel[(triton.cdiv(C, blk), len(rows))](ts, C, len(rows), *nps, tl_dtype(zs[0].dtype),
                                                                BLOCK_P=32, BLOCK_C=blk)
    # 3. dz of the BN terms; the others pass their (block-summed) gradient on
    bns = [k for k in range(K) if modes[k] == AffineMode.BATCHNORM]
    dzs = [empty_like_layout(zs[k], zs[k].shape) if k in bns else gsums[k] if fs[k] > 1
           else gs[k].to(zs[k].dtype).clone() for k in range(K)]
    _apply_launch(bns, gsums, zs, dzs, affines, batch, dweights, dbiases, parts[0][0], tiles)
    return dzs


def _reduce_launch(red, gs, zs, gsums, fs, affines, parts, tiles) -> None:
    """terms_reduce_kernel over the terms ``red`` (indices into the lists)."""
    if not red:
        return
    bm, bc, yv, masked, big = tiles
    B, C = zs[0].shape[:2]
    dummy = parts[0][0]
    ts = tuple((view(gs[k]), view(zs[k]), view(gsums[k]), affines[k].args(dummy), tuple(parts[k]),
                gs[k].shape[2], gs[k].shape[3], zs[k].shape[2], zs[k].shape[3]) for k in red)
    meta = [v for k in red for v in (int(fs[k]), int(affines[k].mode), fs[k] > 1)] + [1, 0, False] * (3 - len(red))
    grid = (max(triton.cdiv(B * zs[k].shape[2] * zs[k].shape[3], bm) for k in red), triton.cdiv(C, bc), len(red))
    record_launch()
    terms_reduce_kernel[grid](ts, yv, B, C, len(red), masked, *meta, tl_dtype(zs[0].dtype), big, BLOCK_M=bm,
                              BLOCK_C=bc)


def _apply_launch(bns, gsums, zs, dzs, affines, batch, dweights, dbiases, dummy, tiles) -> None:
    """terms_bn_apply_kernel over the BN terms ``bns``, writing their ``dzs``."""
    if not bns:
        return
    bm, bc, yv, masked, big = tiles
    B, C = zs[0].shape[:2]
    ts = tuple((view(gsums[k]), view(zs[k]), view(dzs[k]), affines[k].args(dummy), dbiases[k], dweights[k],
                zs[k].shape[2], zs[k].shape[3]) for k in bns)
    flags = [bool(batch[k]) for k in bns] + [False] * (3 - len(bns))
    grid = (max(triton.cdiv(B * zs[k].shape[2] * zs[k].shape[3], bm) for k in bns), triton.cdiv(C, bc), len(bns))
    record_launch()
    terms_bn_apply_kernel[grid](ts, yv, B, C, len(bns), masked, *flags, tl_dtype(zs[0].dtype), big, BLOCK_M=bm,
                                BLOCK_C=bc)
