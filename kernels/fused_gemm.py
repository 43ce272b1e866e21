"""Triton kernels of the fused exchange unit: one gather-GEMM forward and the conv backward.

Every activation is addressed through its strides, so NHWC (channels_last) and NCHW tensors,
and channel slices of either, are read and written in place. Channels are the GEMM's K (input)
and N (output) axes, so in NHWC a tile row is one contiguous run of channels (vector loads).

Argument tuples (Triton >= 3.2 takes tuples of tensors and scalars):
- view: ``(ptr, sB, sC, sH, sW)``: a (B, C, H, W) tensor by its element strides.
- weight: ``(ptr, sO, sI, sKH, sKW)``: a (Cout, Cin, KS, KS) conv weight by its strides.
- affine: ``(w, b, mean, var, eps)``. Mode 2 (BatchNorm) uses all of it:
  ``scale = w / sqrt(var + eps)``, ``shift = b - mean * scale``. Mode 1 (a bias, e.g. a BN
  folded into its conv) reads ``b`` only. Mode 0 is the identity.
- segment: ``(view, Hin, Win, Cin, weights, affines)``: one GEMM term, with one weight and one
  affine per output group.
- term: ``(view, affine)``: one elementwise term.

Forward (``fused_gemm_fwd_kernel``): for output pixels m = (b, ho, wo) and output channels n::

    y[m, n] = act_n( sum_s affine_s( sum_{kh, kw, c} x_s[b, hi, wi, c] * W_s[n, c, kh, kw] )
                     + sum_t affine_t( up_t(z_t)[b, ho, wo, n] ) )
    hi = (ho // F_s) * S_s - P_s + kh,    wi = (wo // F_s) * S_s - P_s + kw,    P = (KS - 1) // 2

A segment with KS = 1 and F > 1 is a 1x1 conv applied to the nearest-upsampled input (the
upsample is an index, never a copy); KS = 3, S = 2 is a strided 3x3 conv step. Terms add an
identity branch or precomputed conv outputs, brought up by F: nearest (the index
z[ho // F, wo // F]) or bilinear (4 taps, HRNetV2's units; ``Upsample``). The N output channels
may be split over up to 3 tensors (groups, at channel offsets ``n1``, ``n2``), each with its own
weights, affine and ReLU flag: that is how the first convs of all chains leaving one branch run
as a single GEMM while each chain keeps its own parameters and output. With ``STATS``, the
kernel also writes each tile's per-channel mean and M2 (sum of squared deviations) of the raw
accumulator, the train-mode BatchNorm statistics in one pass (``kernels/batchnorm.py`` combines
them).

Backward of a single raw conv segment (F = 1), one launch (``conv_backward_kernel``) of two
kinds of programs: ``_dgrad`` (grad of x; a strided conv is split into its S*S output-parity
classes so no tap is wasted) and ``_wgrad`` (grad of the weights; split-K over pixels, partial
sums per split, summed by the caller).

Accumulation is float32 (float64 for float64 inputs). bf16/fp16 operands go to ``tl.dot`` as
they are; float32 operands use ``PREC`` ('tf32' or 'ieee', chosen by the caller as cuDNN's
``allow_tf32`` is).

The launchers at the end (``launch_fused_gemm``, ``launch_conv_backward``) choose the grid,
the tiles and the dtypes; ``hrfast.ops.conv`` and ``hrfast.ops.branch_sum`` register the ops
that call them.
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from .launch import (
    MAX_GROUPS,
    MAX_SEGMENTS,
    MAX_TERMS,
    NO_AFFINE,
    Segment,
    Term,
    acc_dtype,
    dot_precision,
    dot_upcast,
    elementwise_block,
    empty_like_layout,
    needs_int64,
    on_gpu,
    prefix_sums,
    record_launch,
    tl_dtype,
    view,
    weight_view,
)

# The CPU interpreter narrows float32 to bf16 by truncation (Triton 3.9), where the GPU and
# torch round to nearest even: truncation doubles the rounding error and biases it toward
# zero, so the interpreter's bf16 parity would say nothing of the GPU's. ``_narrow`` rounds
# first there; on the GPU it is a plain cast.
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def _narrow(v, dt: tl.constexpr):
    """``v`` cast to ``dt``, rounded to nearest even in the interpreter too (bf16 only: its
    float16 cast already rounds). NaN stays NaN; the carry of a rounding may reach inf, as on
    the GPU."""
    if INTERPRETED:
        if dt == tl.bfloat16:
            f = v.to(tl.float32)
            bits = f.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            v = tl.where(f == f, bits.to(tl.float32, bitcast=True), f)
    return v.to(dt)


@triton.jit
def _index(v, IDX64: tl.constexpr):
    """Offsets in int32 unless a tensor has 2^31 or more elements."""
    if IDX64:
        return v.to(tl.int64)
    return v


@triton.jit
def _mma(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b with b in a's dtype. UPCAST (the CPU interpreter only, whose tl.dot
    multiplies bf16's raw bits) widens both operands exactly to float32 first; on the GPU
    bf16/fp16 operands go to the tensor cores as they are."""
    b = _narrow(b, a.dtype)
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC, out_dtype=acc.dtype)


@triton.jit
def _split_pixels(offs, Ho, Wo):
    """Flat pixel index b*Ho*Wo + ho*Wo + wo -> (b, ho, wo)."""
    b = offs // (Ho * Wo)
    p = offs % (Ho * Wo)
    return b, p // Wo, p % Wo


@triton.jit
def _rows(v, b, h, w):
    """Row offsets of pixels (b, h, w) in view v."""
    return b * v[1] + h * v[3] + w * v[4]


@triton.jit
def _grouped(n, n1, n2, p0, p1, p2, G: tl.constexpr):
    """Per output channel n, the value of its group (p1, p2 only built for G >= 2, 3)."""
    p = p0
    if G >= 2:
        p = tl.where(n < n1, p0, p1)
    if G >= 3:
        p = tl.where(n < n2, p, p2)
    return p


@triton.jit
def _group_vec(affs, k: tl.constexpr, n, n1, n2, mask, G: tl.constexpr):
    """Load element k of each group's affine tuple as a per-channel vector over n."""
    p = affs[0][k] + n
    if G >= 2:
        p = tl.where(n < n1, p, affs[1][k] + (n - n1))
    if G >= 3:
        p = tl.where(n < n2, p, affs[2][k] + (n - n2))
    return tl.load(p, mask=mask, other=0.0)


@triton.jit
def _group_eps(affs, n, n1, n2, G: tl.constexpr):
    e = affs[0][4] + tl.zeros(n.shape, tl.float32)
    if G >= 2:
        e = tl.where(n < n1, e, affs[1][4])
    if G >= 3:
        e = tl.where(n < n2, e, affs[2][4])
    return e


@triton.jit
def _affine(affs, n, n1, n2, mask, AFF: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr):
    """(scale, shift) per channel n, vectors in ACC; AFF as in the module doc."""
    if AFF == 2:
        w = _group_vec(affs, 0, n, n1, n2, mask, G).to(ACC)
        bias = _group_vec(affs, 1, n, n1, n2, mask, G).to(ACC)
        mean = _group_vec(affs, 2, n, n1, n2, mask, G).to(ACC)
        var = _group_vec(affs, 3, n, n1, n2, mask, G).to(ACC)
        eps = _group_eps(affs, n, n1, n2, G).to(ACC)
        scale = w / tl.sqrt(var + eps)
        shift = bias - mean * scale
    else:
        scale = tl.full(n.shape, 1.0, ACC)
        shift = tl.zeros(n.shape, ACC)
        if AFF == 1:
            shift = _group_vec(affs, 1, n, n1, n2, mask, G).to(ACC)
    return scale, shift


@triton.jit
def _weight_ptrs(wt, co, ci, kh, kw):
    return wt[0] + co * wt[1] + ci * wt[2] + kh * wt[3] + kw * wt[4]


@triton.jit
def _segment(seg, b, ho, wo, pix_ok, n, n_ok, n1, n2,
             KS: tl.constexpr, S: tl.constexpr, F: tl.constexpr, AFF: tl.constexpr,
             G: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """affine(sum over taps and input channels of x * W) for one [BLOCK_M, BLOCK_N] tile.

    One pipelined loop runs over (tap, channel block) so that small Cin still gives the
    software pipeline several iterations."""
    x = seg[0]
    Hin = seg[1]
    Win = seg[2]
    Cin = seg[3]
    ws = seg[4]
    PAD: tl.constexpr = (KS - 1) // 2
    hb = (ho // F) * S - PAD
    wb = (wo // F) * S - PAD
    co = n[None, :]
    co1 = co - n1
    co2 = co - n2
    kc = tl.cdiv(Cin, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for it in range(0, KS * KS * kc):
        tap = it // kc
        c = (it % kc) * BLOCK_K + tl.arange(0, BLOCK_K)
        kh = tap // KS
        kw = tap % KS
        hi = hb + kh
        wi = wb + kw
        ok = pix_ok & (hi >= 0) & (hi < Hin) & (wi >= 0) & (wi < Win)
        c_ok = c < Cin
        a = tl.load(x[0] + _rows(x, b, hi, wi)[:, None] + c[None, :] * x[2],
                    mask=ok[:, None] & c_ok[None, :], other=0.0)
        ci = c[:, None]
        p0 = _weight_ptrs(ws[0], co, ci, kh, kw)
        p1 = p0
        p2 = p0
        if G >= 2:
            p1 = _weight_ptrs(ws[1], co1, ci, kh, kw)
        if G >= 3:
            p2 = _weight_ptrs(ws[2], co2, ci, kh, kw)
        wt = tl.load(_grouped(co, n1, n2, p0, p1, p2, G), mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _mma(a, wt, acc, PREC, UPCAST)
    if AFF > 0:
        scale, shift = _affine(seg[5], n, n1, n2, n_ok, AFF, G, ACC)
        acc = acc * scale[None, :] + shift[None, :]
    return acc


@triton.jit
def _source(o, n_out, n_in, UP: tl.constexpr, ACC: tl.constexpr):
    """Bilinear source rows (i0, i1) of output rows ``o`` and the weight of i1, by
    ``F.interpolate``'s rule (UP as :class:`~hrfast.kernels.launch.Upsample`)."""
    of = o.to(ACC)
    one = tl.zeros([1], ACC) + 1    # sizes as ACC tensors (Triton passes a size of 1 as a constant)
    if UP == 2:
        src = of * ((one * (n_in - 1)) / tl.maximum(one * (n_out - 1), 1.0))
    else:
        src = tl.maximum((of + 0.5) * ((one * n_in) / (one * n_out)) - 0.5, 0.0)
    i0 = tl.minimum(src.to(tl.int32), n_in - 1)
    return i0, tl.minimum(i0 + 1, n_in - 1), src - i0.to(ACC)


@triton.jit
def _term(t, b, ho, wo, Ho, Wo, n, n_ok, mask, F: tl.constexpr, AFF: tl.constexpr, UP: tl.constexpr,
          ACC: tl.constexpr):
    """affine(up_F(z))[b, ho, wo, n] for one tile (single output group): nearest is the index
    z[ho // F, wo // F]; bilinear reads 4 taps of z at (ceil(Ho / F), ceil(Wo / F)). The affine
    follows the interpolation, whose weights sum to 1, so either order is the same function."""
    z = t[0]
    if (UP == 0) or (F == 1):
        v = tl.load(z[0] + _rows(z, b, ho // F, wo // F)[:, None] + n[None, :] * z[2], mask=mask, other=0.0).to(ACC)
    else:
        h0, h1, lh = _source(ho, Ho, (Ho + F - 1) // F, UP, ACC)
        w0, w1, lw = _source(wo, Wo, (Wo + F - 1) // F, UP, ACC)
        c = n[None, :] * z[2]
        v00 = tl.load(z[0] + _rows(z, b, h0, w0)[:, None] + c, mask=mask, other=0.0).to(ACC)
        v01 = tl.load(z[0] + _rows(z, b, h0, w1)[:, None] + c, mask=mask, other=0.0).to(ACC)
        v10 = tl.load(z[0] + _rows(z, b, h1, w0)[:, None] + c, mask=mask, other=0.0).to(ACC)
        v11 = tl.load(z[0] + _rows(z, b, h1, w1)[:, None] + c, mask=mask, other=0.0).to(ACC)
        lw2 = lw[:, None]
        lh2 = lh[:, None]
        v = (1.0 - lh2) * ((1.0 - lw2) * v00 + lw2 * v01) + lh2 * ((1.0 - lw2) * v10 + lw2 * v11)
    if AFF > 0:
        scale, shift = _affine((t[1],), n, 0, 0, n_ok, AFF, 1, ACC)
        v = v * scale[None, :] + shift[None, :]
    return v


@triton.jit
def fused_gemm_fwd_kernel(outs, bounds, segs, terms, stats, B, Ho, Wo, N,
                          NS: tl.constexpr, KS0: tl.constexpr, S0: tl.constexpr, F0: tl.constexpr, A0: tl.constexpr,
                          KS1: tl.constexpr, S1: tl.constexpr, F1: tl.constexpr, A1: tl.constexpr,
                          KS2: tl.constexpr, S2: tl.constexpr, F2: tl.constexpr, A2: tl.constexpr,
                          NT: tl.constexpr, TF0: tl.constexpr, TA0: tl.constexpr, TU0: tl.constexpr,
                          TF1: tl.constexpr, TA1: tl.constexpr, TU1: tl.constexpr,
                          TF2: tl.constexpr, TA2: tl.constexpr, TU2: tl.constexpr,
                          TF3: tl.constexpr, TA3: tl.constexpr, TU3: tl.constexpr,
                          G: tl.constexpr, R0: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr,
                          STATS: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                          IDX64: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    pix_ok = offs_m < B * Ho * Wo
    n_ok = n < N
    mask = pix_ok[:, None] & n_ok[None, :]
    b, ho, wo = _split_pixels(offs_m, Ho, Wo)
    n1 = bounds[0]
    n2 = bounds[1]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    if NS > 0:
        acc += _segment(segs[0], b, ho, wo, pix_ok, n, n_ok, n1, n2, KS0, S0, F0, A0, G, ACC, PREC, UPCAST,
                        BLOCK_M, BLOCK_N, BLOCK_K)
    if NS > 1:
        acc += _segment(segs[1], b, ho, wo, pix_ok, n, n_ok, n1, n2, KS1, S1, F1, A1, G, ACC, PREC, UPCAST,
                        BLOCK_M, BLOCK_N, BLOCK_K)
    if NS > 2:
        acc += _segment(segs[2], b, ho, wo, pix_ok, n, n_ok, n1, n2, KS2, S2, F2, A2, G, ACC, PREC, UPCAST,
                        BLOCK_M, BLOCK_N, BLOCK_K)
    if NT > 0:
        acc += _term(terms[0], b, ho, wo, Ho, Wo, n, n_ok, mask, TF0, TA0, TU0, ACC)
    if NT > 1:
        acc += _term(terms[1], b, ho, wo, Ho, Wo, n, n_ok, mask, TF1, TA1, TU1, ACC)
    if NT > 2:
        acc += _term(terms[2], b, ho, wo, Ho, Wo, n, n_ok, mask, TF2, TA2, TU2, ACC)
    if NT > 3:
        acc += _term(terms[3], b, ho, wo, Ho, Wo, n, n_ok, mask, TF3, TA3, TU3, ACC)
    if STATS:
        _store_stats(stats, pid_m, acc, pix_ok, n, n_ok, N, ACC)
    if R0 or R1 or R2:
        zero = n * 0
        relu = _grouped(n, n1, n2, zero + R0, zero + R1, zero + R2, G) != 0
        acc = tl.where(relu[None, :] & (acc < 0), 0.0, acc)
    _store_grouped(outs, acc, b, ho, wo, n, n1, n2, mask, G)


@triton.jit
def _store_stats(stats, pid_m, acc, pix_ok, n, n_ok, N, ACC: tl.constexpr):
    """Row pid_m of the (P, N) statistics buffers: the tile's per-channel mean and M2 of the raw
    accumulator (Chan et al.'s parallel variance parts)."""
    cnt = tl.sum(pix_ok.to(ACC), axis=0)
    mean = tl.sum(tl.where(pix_ok[:, None], acc, 0.0), axis=0) / cnt
    d = tl.where(pix_ok[:, None], acc - mean[None, :], 0.0)
    tl.store(stats[0] + pid_m * N + n, mean, mask=n_ok)
    tl.store(stats[1] + pid_m * N + n, tl.sum(d * d, axis=0), mask=n_ok)


@triton.jit
def _store_grouped(outs, acc, b, ho, wo, n, n1, n2, mask, G: tl.constexpr):
    """The tile into its output groups (channels [0, n1), [n1, n2), [n2, N) of the GEMM)."""
    o0 = outs[0]
    p0 = o0[0] + _rows(o0, b, ho, wo)[:, None] + n[None, :] * o0[2]
    p1 = p0
    p2 = p0
    if G >= 2:
        p1 = outs[1][0] + _rows(outs[1], b, ho, wo)[:, None] + (n - n1)[None, :] * outs[1][2]
    if G >= 3:
        p2 = outs[2][0] + _rows(outs[2], b, ho, wo)[:, None] + (n - n2)[None, :] * outs[2][2]
    tl.store(_grouped(n[None, :], n1, n2, p0, p1, p2, G), _narrow(acc, o0[0].dtype.element_ty), mask=mask)


@triton.jit
def convs_fwd_kernel(convs, offsets, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                     UPCAST: tl.constexpr, IDX64: tl.constexpr):
    """Up to 6 raw convs (one segment each, no affine), each on its own input, in one launch:
    ``convs[k] = (outs, bounds, segment, stats, B, Ho, Wo, N, TILES_N)``, ``META[k] = (KS, S, G,
    STATS, BLOCK_M, BLOCK_N, BLOCK_K)``; conv k owns the programs offsets[k] <= pid <
    offsets[k + 1]. The training plan's convs of one level."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            _conv_tile(pid - offsets[k], convs[k], META[k][0], META[k][1], META[k][2], META[k][3], META[k][4],
                       META[k][5], META[k][6], ACC, PREC, UPCAST, IDX64)


@triton.jit
def _conv_tile(pid, c, KS: tl.constexpr, S: tl.constexpr, G: tl.constexpr, STATS: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
               PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr):
    """One (BLOCK_M pixels, BLOCK_N channels) tile of a raw grouped conv, with its statistics."""
    pid_m = pid // c[8]
    offs_m = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    n = (pid % c[8]) * BLOCK_N + tl.arange(0, BLOCK_N)
    pix_ok = offs_m < c[4] * c[5] * c[6]
    n_ok = n < c[7]
    b, ho, wo = _split_pixels(offs_m, c[5], c[6])
    acc = _segment(c[2], b, ho, wo, pix_ok, n, n_ok, c[1][0], c[1][1], KS, S, 1, 0, G, ACC, PREC, UPCAST,
                   BLOCK_M, BLOCK_N, BLOCK_K)
    if STATS:
        _store_stats(c[3], pid_m, acc, pix_ok, n, n_ok, c[7], ACC)
    _store_grouped(c[0], acc, b, ho, wo, n, c[1][0], c[1][1], pix_ok[:, None] & n_ok[None, :], G)


@triton.jit
def _dgrad(pid_m, pid_n, cls, gx, gzs, ws, B, H, W, Cin, Ho, Wo,
           KS: tl.constexpr, S: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr,
           PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """grad_x[b, ci, h, w] = sum over groups g, taps and channels co of
    grad_z_g[b, co, ho, wo] * W_g[co, ci, kh, kw] with h = ho*S - P + kh.

    ``cls`` is the parity class (h % S, w % S) of the input pixels. In one class, a tap
    either reaches every pixel through an integer ho or none, so the tap test is one scalar
    branch and no MMA runs on structural zeros. ``gzs``: per group ``(view, C_g)``."""
    PAD: tl.constexpr = (KS - 1) // 2
    ph = cls // S
    pw = cls % S
    Hc = (H - ph + S - 1) // S
    Wc = (W - pw + S - 1) // S
    offs_m = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    pix_ok = offs_m < B * Hc * Wc
    b, hh, ww = _split_pixels(offs_m, Hc, Wc)
    h = hh * S + ph
    w = ww * S + pw
    ci = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < Cin
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for g in tl.static_range(G):
        gz = gzs[g][0]
        Cg = gzs[g][1]
        wt = ws[g]
        kc = tl.cdiv(Cg, BLOCK_K)
        for it in range(0, KS * KS * kc):
            tap = it // kc
            kh = tap // KS
            kw = tap % KS
            if ((ph + PAD - kh) % S == 0) & ((pw + PAD - kw) % S == 0):
                co = (it % kc) * BLOCK_K + tl.arange(0, BLOCK_K)
                th = h + PAD - kh
                tw = w + PAD - kw
                ho = th // S
                wo = tw // S
                ok = pix_ok & (th >= 0) & (tw >= 0) & (ho < Ho) & (wo < Wo)
                co_ok = co < Cg
                a = tl.load(gz[0] + _rows(gz, b, ho, wo)[:, None] + co[None, :] * gz[2],
                            mask=ok[:, None] & co_ok[None, :], other=0.0)
                wv = tl.load(_weight_ptrs(wt, co[:, None], ci[None, :], kh, kw),
                             mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
                acc = _mma(a, wv, acc, PREC, UPCAST)
    tl.store(gx[0] + _rows(gx, b, h, w)[:, None] + ci[None, :] * gx[2], _narrow(acc, gx[0].dtype.element_ty),
             mask=pix_ok[:, None] & ci_ok[None, :])


@triton.jit
def _wgrad(pid_co, pid_n, pid_k, part, PSTRIDE, gzs, x, offsets, B, H, W, Cin, Ho, Wo, SPLIT, TILES_CO, TILES_CI,
           KS: tl.constexpr, S: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr,
           PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[split * PSTRIDE + ((off_g + co) * KS*KS + kh*KS + kw) * Cin + ci] = sum over this
    split's output pixels of grad_z_g[b, co, ho, wo] * x[b, ci, ho*S - P + kh, wo*S - P + kw].

    Programs: (G * TILES_CO, KS*KS * TILES_CI, splits). Split-K over the B*Ho*Wo pixels keeps
    the grid wide when Cout and Cin are small (the branch-0 chains); the caller sums the splits."""
    PAD: tl.constexpr = (KS - 1) // 2
    grp = pid_co // TILES_CO
    tap = pid_n // TILES_CI
    kh = tap // KS
    kw = tap % KS
    ci = (pid_n % TILES_CI) * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < Cin
    M = B * Ho * Wo
    start = pid_k * SPLIT
    end = tl.minimum(start + SPLIT, M)
    for g in tl.static_range(G):
        if grp == g:
            gz = gzs[g][0]
            Cg = gzs[g][1]
            co = (pid_co % TILES_CO) * BLOCK_M + tl.arange(0, BLOCK_M)
            co_ok = co < Cg
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
            for m0 in range(start, end, BLOCK_K):
                pix = _index(m0 + tl.arange(0, BLOCK_K), IDX64)
                p_ok = pix < end
                b, ho, wo = _split_pixels(pix, Ho, Wo)
                hi = ho * S - PAD + kh
                wi = wo * S - PAD + kw
                x_ok = p_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
                a = tl.load(gz[0] + _rows(gz, b, ho, wo)[None, :] + co[:, None] * gz[2],
                            mask=co_ok[:, None] & p_ok[None, :], other=0.0)
                xv = tl.load(x[0] + _rows(x, b, hi, wi)[:, None] + ci[None, :] * x[2],
                             mask=x_ok[:, None] & ci_ok[None, :], other=0.0)
                acc = _mma(a, xv, acc, PREC, UPCAST)
            row = ((offsets[g] + co) * (KS * KS) + tap).to(tl.int64)
            tl.store(part + pid_k.to(tl.int64) * PSTRIDE + row[:, None] * Cin + ci[None, :], acc,
                     mask=co_ok[:, None] & ci_ok[None, :])


@triton.jit
def conv_backward_kernel(convs, offsets, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr,
                         PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr):
    """The backward of up to 6 convs in one launch over a 1-D grid: conv k owns the programs
    ``offsets[k] <= pid < offsets[k + 1]``. ``convs[k] = (gx, part, PSTRIDE, gzs, ws, x, goffs, B,
    H, W, Cin, Ho, Wo, SPLIT, TILES_CO, TILES_CI, DG_M, DG_N, DG_C, WG_CO, WG_N)``, ``META[k] =
    (KS, S, G, NEED_X, dgrad tiles (M, N, K), wgrad tiles (M, N, K))``. (Its entries go one by
    one: Triton 3.6 passes no constexpr tuple to a function.)"""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            _conv_backward(pid - offsets[k], convs[k], META[k][0], META[k][1], META[k][2], META[k][3], META[k][4],
                           META[k][5], META[k][6], META[k][7], META[k][8], META[k][9], ACC, PREC, UPCAST, IDX64)


@triton.jit
def _conv_backward(pid, c, KS: tl.constexpr, S: tl.constexpr, G: tl.constexpr, NEED_X: tl.constexpr,
                   D_BM: tl.constexpr, D_BN: tl.constexpr, D_BK: tl.constexpr, W_BM: tl.constexpr,
                   W_BN: tl.constexpr, W_BK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                   UPCAST: tl.constexpr, IDX64: tl.constexpr):
    """Both halves of one conv's backward: the first DG_M * DG_N * DG_C programs (with
    NEED_X) are :func:`_dgrad`'s (pixel tile, Cin tile, parity class), the rest
    :func:`_wgrad`'s (Cout tile, tap x Cin tile, split)."""
    if NEED_X:
        nd = c[16] * c[17] * c[18]
        if pid < nd:
            _dgrad(pid % c[16], (pid // c[16]) % c[17], pid // (c[16] * c[17]), c[0], c[3], c[4], c[7], c[8], c[9],
                   c[10], c[11], c[12], KS, S, G, ACC, PREC, UPCAST, IDX64, D_BM, D_BN, D_BK)
        else:
            _wgrad_program(pid - nd, c, KS, S, G, ACC, PREC, UPCAST, IDX64, W_BM, W_BN, W_BK)
    else:
        _wgrad_program(pid, c, KS, S, G, ACC, PREC, UPCAST, IDX64, W_BM, W_BN, W_BK)


@triton.jit
def _wgrad_program(q, c, KS: tl.constexpr, S: tl.constexpr, G: tl.constexpr, ACC: tl.constexpr,
                   PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """:func:`_wgrad` of the q-th weight-gradient program of conv ``c``."""
    _wgrad(q % c[19], (q // c[19]) % c[20], q // (c[19] * c[20]), c[1], c[2], c[3], c[5], c[6], c[7], c[8], c[9],
           c[10], c[11], c[12], c[13], c[14], c[15], KS, S, G, ACC, PREC, UPCAST, IDX64, BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def pack_weights_kernel(ws, offsets, K: tl.constexpr, BLOCK: tl.constexpr):
    """Up to 16 conv weights cast and laid out for the GEMMs: ``ws[k] = (src, dst, Cout, Cin,
    KS)``, two weight views; dst = src in dst's dtype and strides (channels_last: the input
    channels, the GEMM's K axis, contiguous), BLOCK elements a program in dst's order."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            a = ws[k]
            i = (pid - offsets[k]) * BLOCK + tl.arange(0, BLOCK)
            ok = i < a[2] * a[4] * a[4] * a[3]
            ci = i % a[3]
            tap = (i // a[3]) % (a[4] * a[4])
            co = i // (a[3] * a[4] * a[4])
            v = tl.load(_weight_ptrs(a[0], co, ci, tap // a[4], tap % a[4]), mask=ok, other=0.0)
            tl.store(_weight_ptrs(a[1], co, ci, tap // a[4], tap % a[4]), _narrow(v, a[1][0].dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------- launchers
def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


SMS = 132   # streaming multiprocessors of an H100/H200 SXM: a grid below it leaves SMs idle


def gemm_tiles(M: int, N: int, K: int, device: torch.device) -> dict:
    """Tile shape for a GEMM of M pixels x N channels over K input channels per tap.

    GPU: 128-pixel tiles; where the grid would not fill the machine's 132 SMs, 64-pixel tiles,
    then a half, then a quarter as many channels a tile (the low-resolution branches: W32's
    branch 3 at batch 64 is 3072 pixels x 256 channels, 48 programs of 128 x 128, 192 of
    64 x 64; its merged 1x1 convs up, 3072 x 96, 144 of 64 x 32). N and K tiles are
    matched to the channel counts of HRNet (32 to 384), fp32 accumulators at most 128 x 128.
    The CPU interpreter gets small tiles: its cost grows with the tile, not the pixel count."""
    if not on_gpu(device):
        return dict(BLOCK_M=64, BLOCK_N=_pow2(N, 16, 32), BLOCK_K=_pow2(K, 16, 32), num_warps=4, num_stages=1)
    bm, bn = 128, _pow2(N, 16, 128)
    for bm, bn in ((128, bn), (64, bn), (64, max(16, bn // 2)), (64, max(16, bn // 4))):
        if triton.cdiv(M, bm) * triton.cdiv(N, bn) >= SMS:
            break
    # 128 x 128 tiles take K in steps of 32: with 64, the grouped 3x3 conv with the statistics
    # epilogue needed 255 registers and spilled under Triton 3.6 (the GPU image's; 3.9 fits)
    bk = _pow2(K, 16, 32 if bm * bn >= 128 * 128 else 64)
    # 8 warps from 64 x 128 up: with 4, the merged 1x1 convs' grouped weight pointers and the
    # statistics epilogue needed 255 registers and spilled (benchmarks/offline_compile.py)
    warps = 8 if bm * bn >= 64 * 128 else 4
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=3)


def wgrad_tiles(Cout: int, Cin: int, device: torch.device) -> dict:
    """Tiles of the weight-gradient GEMM: output channels x input channels of one tap, over
    pixels in BLOCK_K steps (long steps: the reduction is over B*Ho*Wo pixels)."""
    if not on_gpu(device):
        return dict(BLOCK_M=_pow2(Cout, 16, 32), BLOCK_N=_pow2(Cin, 16, 32), BLOCK_K=128, num_warps=4, num_stages=1)
    bm, bn = _pow2(Cout, 64, 128), _pow2(Cin, 16, 128)   # 64 rows at least: Hopper's wgmma
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64, num_warps=8 if bm * bn >= 64 * 128 else 4, num_stages=3)


def _group_bounds(widths: Sequence[int]) -> Tuple[int, int]:
    """(n1, n2): where the second and third output groups start in the GEMM's N channels."""
    return widths[0], widths[0] + (widths[1] if len(widths) > 1 else 0)


def _segment_args(s: Segment, groups: int, dummy: torch.Tensor) -> tuple:
    """The kernels' segment tuple of ``s`` (its affines, or none, for each of ``groups``)."""
    aff = s.affines or [NO_AFFINE] * groups
    return (view(s.x), s.x.shape[2], s.x.shape[3], s.x.shape[1], tuple(weight_view(w) for w in s.weights),
            tuple(a.args(dummy) for a in aff))


def launch_fused_gemm(outs: Sequence[torch.Tensor], segments: Sequence[Segment] = (), terms: Sequence[Term] = (),
                      relu: Sequence[bool] = (False,), stats: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                      tiles: Optional[dict] = None) -> None:
    """Launch ``fused_gemm_fwd_kernel`` writing ``outs`` (groups split along channels).

    ``stats``: (mean, M2) buffers of shape (P, N), P = ceil(M / BLOCK_M), written from the raw
    accumulator (only with one segment and no affine)."""
    G, NS, NT = len(outs), len(segments), len(terms)
    assert 1 <= G <= MAX_GROUPS and NS <= MAX_SEGMENTS and NT <= MAX_TERMS and (G == 1 or NT == 0)
    y = outs[0]
    B, _, Ho, Wo = y.shape
    widths = [o.shape[1] for o in outs]
    N = sum(widths)
    bounds = _group_bounds(widths)
    dummy = y
    seg_args, seg_meta = [], []
    for s in segments:
        seg_args.append(_segment_args(s, G, dummy))
        seg_meta += [s.ks, s.stride, s.factor, int((s.affines or [NO_AFFINE])[0].mode)]
    term_args, term_meta = [], []
    for t in terms:
        term_args.append((view(t.z), t.affine.args(dummy)))
        term_meta += [t.factor, int(t.affine.mode), int(t.mode)]
    seg_meta += [1, 1, 1, 0] * (MAX_SEGMENTS - NS)
    term_meta += [1, 0, 0] * (MAX_TERMS - NT)
    # unused slots are never read (NS, NT guard them); Triton wants no empty tuples
    seg_args = seg_args or [(view(y), 1, 1, 1, (weight_view(y),), ((y, y, y, y, 0.0),))]
    term_args = term_args or [(view(y), (y, y, y, y, 0.0))]
    relu = [int(bool(r)) for r in relu] + [0] * (MAX_GROUPS - len(relu))
    M = B * Ho * Wo
    K = max([s.x.shape[1] for s in segments] + [1])
    cfg = dict(tiles or gemm_tiles(M, N, K, y.device))
    if tiles is None and on_gpu(y.device) and sum(s.ks == 3 for s in segments) >= 2:
        # two 3x3 segments (the branch kernels of stage 4) at 64 x 64 x 64 tiles needed 255
        # registers with 4 warps and spilled under Triton 3.6 (the GPU image's); 8 do not
        cfg["num_warps"] = 8
    if stats is not None:
        assert stats[0].shape == (triton.cdiv(M, cfg["BLOCK_M"]), N), "stats buffers must be (ceil(M / BLOCK_M), N)"
    st = tuple(stats) if stats is not None else (dummy, dummy)
    ref = segments[0].x if segments else y
    grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"]))
    big = needs_int64(*outs, *[s.x for s in segments], *[t.z for t in terms])
    record_launch()
    fused_gemm_fwd_kernel[grid](
        tuple(view(o) for o in outs), bounds, tuple(seg_args), tuple(term_args), st, B, Ho, Wo, N,
        NS, *seg_meta, NT, *term_meta, G, *relu, stats is not None, tl_dtype(ref.dtype),
        dot_precision(ref.dtype), dot_upcast(ref.dtype, y.device), big, **cfg)


def wgrad_splits(M: int, tiles_mn: int, device: torch.device) -> int:
    """Split-K factor over the M pixels: enough programs for 2 waves on 132 SMs, each split
    at least 512 pixels long. The interpreter splits small problems too, so the split path is
    tested."""
    if not on_gpu(device):
        return 2 if M >= 64 else 1
    return max(1, min(-(-264 // max(tiles_mn, 1)), M // 512))


MAX_CONVS = 6   # the convs that read a stage-4 unit's inputs: one backward launch


@dataclass
class ConvGrad:
    """One conv's backward: the output gradients ``grads`` of the grouped conv
    ``[conv2d(x, w_g, stride)]`` and whether the input's gradient is wanted."""
    grads: Sequence[torch.Tensor]
    x: torch.Tensor
    weights: Sequence[torch.Tensor]
    stride: int
    need_x: bool

    def plan(self) -> tuple:
        """(dgrad tiles and grid, wgrad tiles, its (co, tap x ci) tiles, the splits it wants)."""
        B, Cin, H, W = self.x.shape
        widths = [w.shape[0] for w in self.weights]
        dcfg, dgrid = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4), (1, 1, 1)
        if self.need_x:
            s = self.stride
            dcfg = gemm_tiles(B * H * W // (s * s), Cin, min(widths), self.x.device)
            Mc = B * -(-H // s) * -(-W // s)    # the pixels of one parity class, at most
            dgrid = (triton.cdiv(Mc, dcfg["BLOCK_M"]), triton.cdiv(Cin, dcfg["BLOCK_N"]), s * s)
        cfg = wgrad_tiles(max(widths), Cin, self.x.device)
        ks = self.weights[0].shape[-1]
        wtiles = (len(widths) * triton.cdiv(max(widths), cfg["BLOCK_M"]), ks * ks * triton.cdiv(Cin, cfg["BLOCK_N"]))
        M = B * self.grads[0].shape[2] * self.grads[0].shape[3]
        return dcfg, dgrid, cfg, wtiles, wgrad_splits(M, wtiles[0] * wtiles[1], self.x.device)


def weight_grad_layout(weights: Sequence[Sequence[torch.Tensor]]) -> Tuple[List[Tuple[int, tuple]], int]:
    """Where :func:`launch_conv_backward` puts the weight gradient of each conv (``weights``: its
    groups' weights) in its flat buffer: ([(offset, (N, k, k, Cin))], the buffer's length), one
    block after another. No padding between them: an op's output holds no unwritten bytes
    (W32's and W48's blocks are 64-byte multiples anyway)."""
    shapes = [(sum(w.shape[0] for w in ws), ws[0].shape[-1], ws[0].shape[-1], ws[0].shape[1]) for ws in weights]
    starts = prefix_sums(sum(w.numel() for w in ws) for ws in weights)
    return list(zip(starts[:-1], shapes)), starts[-1]


def launch_conv_backward(convs: Sequence[ConvGrad]) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """(grad_x of each conv (empty when not needed), one flat float32 buffer holding the
    gradient of each conv's weights as an (N, k, k, Cin) block at :func:`weight_grad_layout`):
    one launch per 6 convs, whatever their shapes, and one sum of their split-K partials."""
    layout, length = weight_grad_layout([c.weights for c in convs])
    gw = torch.empty(length, dtype=acc_dtype(convs[0].x.dtype), device=convs[0].x.device)
    gxs: List[torch.Tensor] = []
    for lo in range(0, len(convs), MAX_CONVS):
        gxs += _backward_chunk(convs[lo:lo + MAX_CONVS], gw, layout[lo:lo + MAX_CONVS])
    return gxs, gw


def _backward_chunk(convs: Sequence[ConvGrad], gw: torch.Tensor, layout: Sequence[Tuple[int, tuple]]
                    ) -> List[torch.Tensor]:
    """One launch of up to 6 convs' backward writing their weight gradients into ``gw`` at their
    ``layout`` entries (:func:`weight_grad_layout`); returns their grad_x."""
    plans = [c.plan() for c in convs]
    x0 = convs[0].x
    out_at = [at for at, _ in layout]
    sizes = [n * k * k * ci for _, (n, k, _, ci) in layout]
    splits = [p[4] for p in plans]
    # a conv without split-K writes its weight gradient in place; the others their partials,
    # each split a 64-byte aligned row of the scratch buffer
    split = [k for k in range(len(convs)) if splits[k] > 1]
    rows = {k: -(-sizes[k] // 16) * 16 for k in split}
    part_at = prefix_sums(splits[k] * rows[k] for k in split)
    scratch = torch.empty(part_at[-1], dtype=gw.dtype, device=x0.device)
    where = {k: (scratch[part_at[i]:], rows[k]) for i, k in enumerate(split)}
    args, meta, programs, gxs, warps = [], [], [], [], 4
    for k, (c, (dcfg, dgrid, cfg, wtiles, sp)) in enumerate(zip(convs, plans)):
        B, Cin, H, W = c.x.shape
        Ho, Wo = c.grads[0].shape[2:]
        widths = [w.shape[0] for w in c.weights]
        ks = c.weights[0].shape[-1]
        gx = empty_like_layout(c.x, c.x.shape) if c.need_x else c.x.new_empty(0)
        gxs.append(gx)
        part, pstride = where.get(k, (gw[out_at[k]:], 0))
        goffs = (0, *_group_bounds(widths))
        args.append((view(gx if c.need_x else c.x), part, pstride, tuple((view(g), g.shape[1]) for g in c.grads),
                     tuple(weight_view(w) for w in c.weights), view(c.x), goffs, B, H, W, Cin, Ho, Wo,
                     -(-(B * Ho * Wo) // sp), wtiles[0] // len(widths), wtiles[1] // (ks * ks), *dgrid, *wtiles))
        meta.append((ks, c.stride, len(widths), c.need_x, dcfg["BLOCK_M"], dcfg["BLOCK_N"], dcfg["BLOCK_K"],
                     cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]))
        programs.append((dgrid[0] * dgrid[1] * dgrid[2] if c.need_x else 0) + wtiles[0] * wtiles[1] * sp)
        warps = max(warps, cfg["num_warps"], dcfg["num_warps"] if c.need_x else 4)
    offs = prefix_sums(programs)
    big = needs_int64(*[t for c in convs for t in (c.x, *c.grads)])
    record_launch()
    conv_backward_kernel[(offs[-1],)](tuple(args), offs, len(convs), tuple(meta), tl_dtype(x0.dtype),
                                      dot_precision(x0.dtype), dot_upcast(x0.dtype, x0.device), big,
                                      num_warps=warps, num_stages=wgrad_tiles(1, 1, x0.device)["num_stages"])
    if split:
        _sum_splits([(where[k][0], splits[k], sizes[k], where[k][1], gw[out_at[k]:]) for k in split])
    return gxs


@triton.jit
def split_sum_kernel(sums, offsets, K: tl.constexpr, BLOCK: tl.constexpr):
    """Sum k: ``sums[k] = (partials, splits, n, stride, out)``: out[i] = sum over s, in order, of
    partials[s * stride + i] for i < n, BLOCK elements a program."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            a = sums[k]
            i = (pid - offsets[k]) * BLOCK + tl.arange(0, BLOCK)
            ok = i < a[2]
            acc = tl.load(a[0] + i, mask=ok, other=0.0)
            for sp in range(1, a[1]):
                acc += tl.load(a[0] + sp * a[3] + i, mask=ok, other=0.0)
            tl.store(a[4] + i, acc, mask=ok)


def _sum_splits(sums: Sequence[tuple]) -> None:
    """The split-K partials of several convs summed in one launch (a fixed order: deterministic)."""
    blk = elementwise_block(sums[0][0].device)
    offs = prefix_sums(triton.cdiv(s[2], blk) for s in sums)
    record_launch()
    split_sum_kernel[(offs[-1],)](tuple(sums), offs, len(sums), BLOCK=blk)


MAX_PACKED = 16    # the conv weights of a stage-4 unit's training plan: one launch


def launch_pack_weights(weights: Sequence[torch.Tensor], dtype: torch.dtype) -> List[torch.Tensor]:
    """Each weight in ``dtype`` and channels_last (what the GEMMs load 16 bytes at a time), one
    launch per 16 weights."""
    outs = [torch.empty(w.shape, dtype=dtype, device=w.device, memory_format=torch.channels_last) for w in weights]
    blk = elementwise_block(weights[0].device)
    for lo in range(0, len(weights), MAX_PACKED):
        part = range(lo, min(lo + MAX_PACKED, len(weights)))
        offs = prefix_sums(triton.cdiv(weights[k].numel(), blk) for k in part)
        args = tuple((weight_view(weights[k]), weight_view(outs[k]), weights[k].shape[0], weights[k].shape[1],
                      weights[k].shape[-1]) for k in part)
        record_launch()
        pack_weights_kernel[(offs[-1],)](args, offs, len(part), BLOCK=blk)
    return outs


MAX_CONVS_FWD = 6   # the convs that read a stage-4 unit's inputs: one forward launch


def launch_convs(problems: Sequence[Tuple[Sequence[torch.Tensor], Segment, Optional[Sequence[torch.Tensor]]]]) -> None:
    """Raw grouped convs of their own inputs, at most 6 a launch: each problem is (outputs,
    its segment (one input, one weight per output, no affine), its (mean, M2) statistics buffers
    of (ceil(M / BLOCK_M), N) or None), with the tiles :func:`gemm_tiles` picks for it."""
    for lo in range(0, len(problems), MAX_CONVS_FWD):
        _convs_chunk(problems[lo:lo + MAX_CONVS_FWD])


def _convs_chunk(problems) -> None:
    args, meta, programs, warps = [], [], [], 1
    for outs, seg, stats in problems:
        y = outs[0]
        B, _, Ho, Wo = y.shape
        widths = [o.shape[1] for o in outs]
        N, M = sum(widths), B * Ho * Wo
        cfg = gemm_tiles(M, N, seg.x.shape[1], y.device)
        if stats is not None:
            assert stats[0].shape == (triton.cdiv(M, cfg["BLOCK_M"]), N), "stats buffers must be (ceil(M / BLOCK_M), N)"
        tiles_n = triton.cdiv(N, cfg["BLOCK_N"])
        args.append((tuple(view(o) for o in outs), _group_bounds(widths), _segment_args(seg, len(outs), y),
                     tuple(stats) if stats is not None else (y, y), B, Ho, Wo, N, tiles_n))
        meta.append((seg.ks, seg.stride, len(outs), stats is not None, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]))
        programs.append(triton.cdiv(M, cfg["BLOCK_M"]) * tiles_n)
        warps = max(warps, cfg["num_warps"])
    x0 = problems[0][1].x
    big = needs_int64(*[t for outs, seg, _ in problems for t in (*outs, seg.x)])
    offs = prefix_sums(programs)
    record_launch()
    convs_fwd_kernel[(offs[-1],)](tuple(args), offs, len(problems), tuple(meta), tl_dtype(x0.dtype),
                                  dot_precision(x0.dtype), dot_upcast(x0.dtype, x0.device), big,
                                  num_warps=warps, num_stages=gemm_tiles(1, 1, 1, x0.device)["num_stages"])
