"""Triton kernels of train-mode BatchNorm for the fused exchange unit, and their launchers:
the statistics in one pass and the running-statistics update (``hrfast.ops.batchnorm``
registers the ops ``bn_stats_many`` and ``bn_partials``).

Views and the (mean, M2) per-tile partials follow ``kernels/fused_gemm.py``. Per-tile
partials are combined exactly (Chan et al.): with tile counts n_p, means m_p and M2_p,
``mean = sum n_p m_p / n`` and ``M2 = sum M2_p + n_p (m_p - mean)^2``. No atomics: the
statistics are the same on every run.
"""
from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl

from .fused_gemm import _index, _narrow, _rows, _split_pixels
from .launch import acc_dtype, block_rows, needs_int64, on_gpu, record_launch, stats_tile, tl_dtype, view


@triton.jit
def _tile_count(p, M, TILE):
    """Rows in tile p of a pixel axis of length M cut into tiles of TILE (0 past the end)."""
    return tl.maximum(tl.minimum(M - p * TILE, TILE), 0)


@triton.jit
def bn_finalize_many_kernel(items, K: tl.constexpr, UPDATE: tl.constexpr, CUMULATIVE: tl.constexpr,
                            G0: tl.constexpr, G1: tl.constexpr, G2: tl.constexpr, ACC: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_finalize` of up to 3 convs' statistics in one launch, conv = program_id(1); each
    item ``(part_mean, part_m2, P, M, TILE, N, mean_out, var_out, groups, bounds)``. (Six
    slots spilled registers at W32's shapes through the offline sm_90a compile; three do not.)"""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    t = tl.program_id(1)
    if t == 0:
        _finalize_item(pid, nprog, items[0], UPDATE, CUMULATIVE, G0, ACC, BLOCK_P, BLOCK_C)
    if K > 1:
        if t == 1:
            _finalize_item(pid, nprog, items[1], UPDATE, CUMULATIVE, G1, ACC, BLOCK_P, BLOCK_C)
    if K > 2:
        if t == 2:
            _finalize_item(pid, nprog, items[2], UPDATE, CUMULATIVE, G2, ACC, BLOCK_P, BLOCK_C)


@triton.jit
def _finalize_item(pid, nprog, a, UPDATE: tl.constexpr, CUMULATIVE: tl.constexpr, G: tl.constexpr,
                   ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    _finalize(pid, nprog, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], UPDATE, CUMULATIVE, G, ACC,
              BLOCK_P, BLOCK_C)


@triton.jit
def _finalize(pid, nprog, part_mean, part_m2, P, M, TILE, N, mean_out, var_out, groups, bounds,
              UPDATE: tl.constexpr, CUMULATIVE: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Combine P tiles of (mean, M2) over M pixels into per-channel mean and biased variance;
    with UPDATE, also update each group's running statistics as ``nn.BatchNorm2d`` does.

    ``groups``: per group ``(running_mean, running_var, num_batches_tracked, momentum_hi,
    momentum_lo)`` (momentum = hi + lo, two float32 scalars),
    group g holding channels [bounds[g], bounds[g + 1]). A grid-stride loop over channel blocks
    lets one program serve all channels: CUMULATIVE (momentum None) reads the batch counter,
    so it runs on a single program that also increments it."""
    for c0 in range(pid * BLOCK_C, N, nprog * BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < N
        total = tl.zeros([BLOCK_C], dtype=ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            cnt = _tile_count(p, M, TILE).to(ACC)
            m = tl.load(part_mean + p[:, None] * N + c[None, :], mask=(p < P)[:, None] & c_ok[None, :], other=0.0)
            total += tl.sum(cnt[:, None] * m, axis=0)
        mean = total / M
        m2 = tl.zeros([BLOCK_C], dtype=ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            cnt = _tile_count(p, M, TILE).to(ACC)
            ok = (p < P)[:, None] & c_ok[None, :]
            m = tl.load(part_mean + p[:, None] * N + c[None, :], mask=ok, other=0.0)
            q = tl.load(part_m2 + p[:, None] * N + c[None, :], mask=ok, other=0.0)
            d = m - mean[None, :]
            m2 += tl.sum(q + cnt[:, None] * d * d, axis=0)
        var = m2 / M
        tl.store(mean_out + c, mean, mask=c_ok)
        tl.store(var_out + c, var, mask=c_ok)
        if UPDATE:
            unbiased = var * M / tl.maximum(M - 1, 1)
            for g in tl.static_range(G):
                lo = bounds[g]
                hi = bounds[g + 1]
                grp = groups[g]
                ok = c_ok & (c >= lo) & (c < hi)
                # momentum as a float32 pair (hi + lo): float64 statistics keep all its digits.
                # A negative value stands for None: a cumulative average.
                mom = (tl.zeros([BLOCK_C], ACC) + grp[3]) + grp[4]
                if CUMULATIVE:
                    mom = tl.where(mom < 0, 1.0 / (tl.load(grp[2]).to(ACC) + 1.0), mom)
                rm_p = grp[0] + (c - lo)
                rv_p = grp[1] + (c - lo)
                rm = tl.load(rm_p, mask=ok, other=0.0).to(ACC)
                rv = tl.load(rv_p, mask=ok, other=0.0).to(ACC)
                tl.store(rm_p, _narrow((1.0 - mom) * rm + mom * mean, rm_p.dtype.element_ty), mask=ok)
                tl.store(rv_p, _narrow((1.0 - mom) * rv + mom * unbiased, rv_p.dtype.element_ty), mask=ok)
    if UPDATE:
        if pid == 0:
            for g in tl.static_range(G):
                nbt = groups[g][2]
                tl.store(nbt, tl.load(nbt) + 1)


@triton.jit
def bn_partials_kernel(z, part_mean, part_m2, B, H, W, C, ACC: tl.constexpr, IDX64: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-tile (mean, M2) of a materialized (B, C, H, W) tensor, as the GEMM's STATS epilogue
    writes them (used when a conv ran on cuDNN)."""
    pid_m = tl.program_id(0)
    offs = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pix_ok = offs < B * H * W
    c_ok = c < C
    b, h, w = _split_pixels(offs, H, W)
    v = tl.load(z[0] + _rows(z, b, h, w)[:, None] + c[None, :] * z[2],
                mask=pix_ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
    cnt = tl.sum(pix_ok.to(ACC), axis=0)
    mean = tl.sum(v, axis=0) / cnt
    d = tl.where(pix_ok[:, None], v - mean[None, :], 0.0)
    tl.store(part_mean + pid_m * C + c, mean, mask=c_ok)
    tl.store(part_m2 + pid_m * C + c, tl.sum(d * d, axis=0), mask=c_ok)


# ------------------------------------------------------------------------------------- launchers
def _float_pair(v: float) -> Tuple[float, float]:
    """v as hi + lo, both exact float32 values (Triton passes float scalars as float32)."""
    hi = float(torch.tensor(v, dtype=torch.float32))
    return hi, float(torch.tensor(v - hi, dtype=torch.float32))


MAX_FINALIZE = 3   # convs whose statistics one bn_finalize_many_kernel launch combines


def _finalize_args(part_mean, part_m2, count, running, widths, update, mean, var):
    """(kernel item, groups count, cumulative) of one conv's statistics, written to ``mean`` /
    ``var`` (N,)."""
    P, N = part_mean.shape
    bounds = [0]
    for w in widths:
        bounds.append(bounds[-1] + w)
    bounds += [N] * (4 - len(bounds))
    groups = tuple((rm, rv, nbt, *_float_pair(m)) for rm, rv, nbt, m in running) if update \
        else ((mean, var, mean, 0.0, 0.0),)
    item = (part_mean, part_m2, P, count, stats_tile(count, P), N, mean, var, groups, tuple(bounds))
    return item, len(groups), update and any(r[3] < 0 for r in running)


def launch_bn_finalize_many(items: Sequence[tuple], update: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(means, variances) of up to :data:`MAX_FINALIZE` convs' statistics, each concatenated
    over the convs in order, in one launch. Each item is ``(part_mean, part_m2, count, running,
    widths)``: (P, N) partials over ``count`` pixels, and per channel group of ``widths``
    ``(running_mean, running_var, num_batches_tracked, momentum)``, momentum negative for None
    (a cumulative average), updated in place when ``update``."""
    assert 1 <= len(items) <= MAX_FINALIZE
    ns = [it[0].shape[1] for it in items]
    means = torch.empty(sum(ns), dtype=items[0][0].dtype, device=items[0][0].device)
    variances = torch.empty_like(means)
    built = [_finalize_args(*it, update, m, v) for it, m, v in zip(items, means.split(ns), variances.split(ns))]
    cumulative = any(b[2] for b in built)
    blk = block_rows(max(it[0].shape[1] for it in items), 128)
    gs = [b[1] for b in built] + [1] * (MAX_FINALIZE - len(built))
    grid = (1 if cumulative else max(triton.cdiv(it[0].shape[1], blk) for it in items), len(items))
    record_launch()
    bn_finalize_many_kernel[grid](tuple(b[0] for b in built), len(items), update, cumulative, *gs,
                                  tl_dtype(items[0][0].dtype), BLOCK_P=32, BLOCK_C=blk)
    return means, variances


def partials_tile(device: torch.device) -> int:
    """Pixels per partial row of :func:`launch_bn_partials`."""
    return 128 if on_gpu(device) else 32


def launch_bn_partials(z: torch.Tensor) -> List[torch.Tensor]:
    """[mean, M2], each (ceil(B*H*W / tile), C), of z (B, C, H, W)."""
    B, C, H, W = z.shape
    bm = partials_tile(z.device)
    P = triton.cdiv(B * H * W, bm)
    pm = torch.empty((P, C), dtype=acc_dtype(z.dtype), device=z.device)
    pm2 = torch.empty_like(pm)
    bc = block_rows(C, 64)
    record_launch()
    bn_partials_kernel[(P, triton.cdiv(C, bc))](view(z), pm, pm2, B, H, W, C, tl_dtype(z.dtype), needs_int64(z),
                                                BLOCK_M=bm, BLOCK_C=bc)
    return [pm, pm2]
