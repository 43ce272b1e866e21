"""Triton kernels of train-mode BatchNorm for the fused exchange unit: statistics in one pass,
the running-statistics update, and the fused backward of a BN term of the branch sum.

Views, affines and the (mean, M2) per-tile partials follow ``kernels/fused_gemm.py``. Per-tile
partials are combined exactly (Chan et al.): with tile counts n_p, means m_p and M2_p,
``mean = sum n_p m_p / n`` and ``M2 = sum M2_p + n_p (m_p - mean)^2``. No atomics: the
statistics are the same on every run.

Backward of one term ``u = up_F(BN(z))`` of ``y = act(base + sum of terms)``, with
``g = grad_y * (y > 0)`` and ``gsum`` the F x F block sums of g at z's resolution::

    dbias = sum gsum,    dweight = sum gsum * xhat,    xhat = (z - mean) / sqrt(var + eps)
    dz = w / sqrt(var + eps) * (gsum - (dbias + xhat * dweight) / n)     (batch statistics)
    dz = w / sqrt(var + eps) * gsum                                      (running statistics)
"""
import triton
import triton.language as tl

from .fused_gemm import _index, _narrow, _rows, _split_pixels


@triton.jit
def _tile_count(p, M, TILE):
    """Rows in tile p of a pixel axis of length M cut into tiles of TILE (0 past the end)."""
    return tl.maximum(tl.minimum(M - p * TILE, TILE), 0)


@triton.jit
def bn_finalize_kernel(part_mean, part_m2, P, M, TILE, N, mean_out, var_out, groups, bounds,
                       UPDATE: tl.constexpr, CUMULATIVE: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Combine P tiles of (mean, M2) over M pixels into per-channel mean and biased variance;
    with UPDATE, also update each group's running statistics as ``nn.BatchNorm2d`` does.

    ``groups``: per group ``(running_mean, running_var, num_batches_tracked, momentum_hi,
    momentum_lo)`` (momentum = hi + lo, two float32 scalars),
    group g holding channels [bounds[g], bounds[g + 1]). A grid-stride loop over channel blocks
    lets one program serve all channels: CUMULATIVE (momentum None) reads the batch counter,
    so it runs on a single program that also increments it."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
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


def block_rows(n: int, cap: int = 1024) -> int:
    """A power of two covering n, between 16 and cap."""
    return max(16, min(cap, triton.next_power_of_2(max(int(n), 1))))
