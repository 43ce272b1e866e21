"""Triton kernels of the sums of exchange-unit output branches, forward and fused backward,
several branches (or terms) per launch, and their launchers (``hrfast.ops.branch_sum``
registers the ops ``branch_sums`` and ``branch_sums_backward`` that call them).

Forward (``sums_fwd_kernel``), for each branch::

    y = act( sum_t up_{F_t}( affine_t(z_t) ) )      (the identity: a term with F = 1, no affine)

Backward of one term ``u = up_F(BN(z))`` of ``y = act(base + sum of terms)``, with
``g = grad_y * (y > 0)`` and ``gsum`` the F x F block sums of g at z's resolution::

    dbias = sum gsum,    dweight = sum gsum * xhat,    xhat = (z - mean) / sqrt(var + eps)
    dz = w / sqrt(var + eps) * (gsum - (dbias + xhat * dweight) / n)     (batch statistics)
    dz = w / sqrt(var + eps) * gsum                                      (running statistics)

in three launches for all the terms given, whatever branch they belong to: block sums and
per-tile partials, row sums of the partials, the BN terms' dz. The ReLU's mask ``y > 0`` is
applied inside them, and one term of each branch writes the masked gradient of its base.

Several problems in one launch: a 1-D grid in which problem k owns the programs
``offsets[k] <= pid < offsets[k + 1]``, each a tile of (BLOCK_M pixels, BLOCK_C channels) of
its own shape; ``META[k]`` holds problem k's compile-time choices. Views and affines follow
``kernels/fused_gemm.py``.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import triton
import triton.language as tl

from .fused_gemm import _index, _narrow, _rows, _split_pixels, _term
from .launch import (
    Affine,
    AffineMode,
    Term,
    acc_dtype,
    block_rows,
    elementwise_block,
    empty_like_layout,
    needs_int64,
    on_gpu,
    prefix_sums,
    record_launch,
    tl_dtype,
    view,
)

# Problems per launch: the 4 output branches of a unit (forward), and their 12 terms (backward).
MAX_SUMS = 4
MAX_TERM_GRADS = 12


@triton.jit
def relu_mask_kernel(g, gy, y, numel, IDX64: tl.constexpr, BLOCK: tl.constexpr):
    """g = gy where y > 0 else 0, over one dense buffer (gy and y share their strides)."""
    offs = _index(tl.program_id(0), IDX64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    yv = tl.load(y + offs, mask=ok, other=0.0)
    gv = tl.load(gy + offs, mask=ok, other=0.0)
    tl.store(g + offs, tl.where(yv > 0, gv, 0.0).to(g.dtype.element_ty), mask=ok)


@triton.jit
def _tile(pid, M, C, IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program pid of a (M pixels, C channels) problem: (pixel tile, pixel offsets, channels,
    pixel mask, channel mask)."""
    tiles_c = tl.cdiv(C, BLOCK_C)
    pid_m = pid // tiles_c
    offs = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), IDX64)
    c = (pid % tiles_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    return pid_m, offs, c, offs < M, c < C


@triton.jit
def _inv_std(aff, c, c_ok, ACC: tl.constexpr):
    var = tl.load(aff[3] + c, mask=c_ok, other=1.0).to(ACC)
    return 1.0 / tl.sqrt(var + aff[4])


# ----------------------------------------------------------------------------------------- forward
@triton.jit
def sums_fwd_kernel(outs, offsets, B, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr,
                    IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Up to 4 branch sums: ``outs[k] = (y, Ho, Wo, C, terms)``, each term ``(view, affine)``;
    ``META[k] = (RELU, NT, F_0, AFF_0, UP_0, F_1, ...)``. (The body is inline: Triton 3.6 passes
    no constexpr tuple to a function.)"""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            o = outs[k]
            y = o[0]
            _, offs, n, pix_ok, n_ok = _tile(pid - offsets[k], B * o[1] * o[2], o[3], IDX64, BLOCK_M, BLOCK_C)
            mask = pix_ok[:, None] & n_ok[None, :]
            b, ho, wo = _split_pixels(offs, o[1], o[2])
            acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC)
            for t in tl.static_range(tl.constexpr(META[k][1])):   # a constexpr under Triton 3.6 too
                acc += _term(o[4][t], b, ho, wo, o[1], o[2], n, n_ok, mask, META[k][2 + 3 * t], META[k][3 + 3 * t],
                             META[k][4 + 3 * t], ACC)
            if META[k][0]:
                acc = tl.where(acc < 0, 0.0, acc)
            tl.store(y[0] + _rows(y, b, ho, wo)[:, None] + n[None, :] * y[2], _narrow(acc, y[0].dtype.element_ty),
                     mask=mask)


# ---------------------------------------------------------------------------------------- backward
@triton.jit
def terms_reduce_kernel(ts, offsets, B, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr,
                        IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_term_reduce` of up to 12 terms: ``ts[k] = (g, z, gsum, affine, parts, H, W, Hk,
    Wk, C, y, gbase)``, ``META[k] = (F, AFF, STORE, MASK, BASE)``."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            _term_reduce(pid - offsets[k], ts[k], B, META[k][0], META[k][1], META[k][2], META[k][3], META[k][4],
                         ACC, IDX64, BLOCK_M, BLOCK_C)


@triton.jit
def _term_reduce(pid, a, B, F: tl.constexpr, AFF: tl.constexpr, STORE: tl.constexpr, MASK: tl.constexpr,
                 BASE: tl.constexpr, ACC: tl.constexpr, IDX64: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """For one term at resolution (Hk, Wk) = ceil((H, W) / F), one tile: gsum = F x F block
    sums of the output gradient g (stored when STORE), and the tile's partial sums of gsum and,
    for a BN (AFF == 2), of gsum * xhat, into the two (P, C) buffers ``parts``. ``MASK``: g is
    the raw gradient of ``act(sum)`` = y, masked here by y > 0; ``BASE``: the masked g is also
    written to ``gbase`` (the gradient of the branch's base: the blocks cover every pixel)."""
    g, z, gsum, aff, parts = a[0], a[1], a[2], a[3], a[4]
    H, W, Hk, Wk, C, y, gb = a[5], a[6], a[7], a[8], a[9], a[10], a[11]
    pid_m, offs, c, pix_ok, c_ok = _tile(pid, B * Hk * Wk, C, IDX64, BLOCK_M, BLOCK_C)
    mask = pix_ok[:, None] & c_ok[None, :]
    b, hk, wk = _split_pixels(offs, Hk, Wk)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC)
    # a loop, not unrolled: 64 unrolled taps of g and y (F = 8) would be scheduled together and
    # spill (sm_90a, 12 terms a launch)
    for tap in range(F * F):
        h = hk * F + tap // F
        w = wk * F + tap % F
        ok = (pix_ok & (h < H) & (w < W))[:, None] & c_ok[None, :]
        v = tl.load(g[0] + _rows(g, b, h, w)[:, None] + c[None, :] * g[2], mask=ok, other=0.0).to(ACC)
        if MASK:
            yv = tl.load(y[0] + _rows(y, b, h, w)[:, None] + c[None, :] * y[2], mask=ok, other=0.0)
            v = tl.where(yv > 0, v, 0.0)
        if BASE:
            tl.store(gb[0] + _rows(gb, b, h, w)[:, None] + c[None, :] * gb[2], _narrow(v, gb[0].dtype.element_ty),
                     mask=ok)
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
def terms_sum_rows_kernel(ts, offsets, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Row sums of the partials of up to 12 terms: ``ts[k] = (parts, P, outs, C)``, ``META[k]``
    the number of buffers (1: dbias; 2: dbias and dweight), one program per BLOCK_C channels."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            _sum_rows(pid - offsets[k], ts[k][0], ts[k][1], ts[k][3], ts[k][2], META[k], ACC, BLOCK_P, BLOCK_C)


@triton.jit
def _sum_rows(pid, parts, P, C, outs, NP: tl.constexpr, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """outs[k][c] = sum over p of parts[k][p, c] for the first NP of the (P, C) buffers."""
    c = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    for k in tl.static_range(NP):
        acc = tl.zeros([BLOCK_C], dtype=ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            acc += tl.sum(tl.load(parts[k] + p[:, None] * C + c[None, :],
                                  mask=(p < P)[:, None] & c_ok[None, :], other=0.0), axis=0)
        tl.store(outs[k] + c, _narrow(acc, outs[k].dtype.element_ty), mask=c_ok)


@triton.jit
def terms_bn_apply_kernel(ts, offsets, B, K: tl.constexpr, META: tl.constexpr, ACC: tl.constexpr,
                          IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_bn_apply` of up to 12 BN terms: ``ts[k] = (gsum, z, dz, affine, dbias, dweight,
    Hk, Wk, C, y)``, ``META[k] = (BATCH, MASK)``."""
    pid = tl.program_id(0)
    for k in tl.static_range(K):
        if (pid >= offsets[k]) & (pid < offsets[k + 1]):
            _bn_apply(pid - offsets[k], ts[k], B, META[k][0], META[k][1], ACC, IDX64, BLOCK_M, BLOCK_C)


@triton.jit
def _bn_apply(pid, a, B, BATCH: tl.constexpr, MASK: tl.constexpr, ACC: tl.constexpr, IDX64: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dz of a BN term, one tile (module doc); ``dbias``/``dweight`` are the summed partials.
    ``MASK``: gsum is the raw gradient at z's resolution, masked here by y > 0."""
    gsum, z, dz, aff, dbias, dweight = a[0], a[1], a[2], a[3], a[4], a[5]
    Hk, Wk, C, y = a[6], a[7], a[8], a[9]
    _, offs, c, pix_ok, c_ok = _tile(pid, B * Hk * Wk, C, IDX64, BLOCK_M, BLOCK_C)
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
def in_layout_of(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad`` with ``y``'s strides (a copy only where they differ): autograd may hand over an
    NCHW or expanded gradient of a channels_last output, whose channel-strided loads would not
    vectorize."""
    if grad.stride() == y.stride():
        return grad
    return grad.contiguous(memory_format=torch.channels_last if y.dim() == 4 and
                           y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)


def launch_relu_mask(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad where y > 0, else 0 (in y's layout)."""
    grad = in_layout_of(grad, y)
    g = torch.empty_like(grad)
    blk = elementwise_block(y.device)
    record_launch()
    relu_mask_kernel[(triton.cdiv(y.numel(), blk),)](g, grad, y, y.numel(), needs_int64(y), BLOCK=blk)
    return g


def _tiles(channels: Sequence[int], device: torch.device):
    """(BLOCK_M, BLOCK_C) of the elementwise kernels: channel tiles sized for the narrowest
    problem, so the widest-map (and narrowest) branch wastes no lanes."""
    return 64, block_rows(min(channels), 64 if on_gpu(device) else 32)


def launch_sums(ys: Sequence[torch.Tensor], terms: Sequence[Sequence[Term]], relu: Sequence[bool]) -> None:
    """``ys[i] = act_i(sum of terms[i])`` (each term at 1/F of y_i, the first usually the
    identity), at most 4 branches a launch."""
    for lo in range(0, len(ys), MAX_SUMS):
        part = range(lo, min(lo + MAX_SUMS, len(ys)))
        B = ys[lo].shape[0]
        bm, bc = _tiles([ys[i].shape[1] for i in part], ys[lo].device)
        outs = tuple((view(ys[i]), ys[i].shape[2], ys[i].shape[3], ys[i].shape[1],
                      tuple((view(t.z), t.affine.args(ys[i])) for t in terms[i])) for i in part)
        meta = tuple((bool(relu[i]), len(terms[i]), *[v for t in terms[i] for v in
                                                      (int(t.factor), int(t.affine.mode), int(t.mode))]) for i in part)
        offs = prefix_sums(triton.cdiv(B * y.shape[2] * y.shape[3], bm) * triton.cdiv(y.shape[1], bc)
                           for y in (ys[i] for i in part))
        big = needs_int64(*[ys[i] for i in part], *[t.z for i in part for t in terms[i]])
        record_launch()
        sums_fwd_kernel[(offs[-1],)](outs, offs, B, len(part), meta, tl_dtype(ys[lo].dtype), big,
                                     BLOCK_M=bm, BLOCK_C=bc)


@dataclass
class TermGrad:
    """The backward of one term ``up_f(affine(z))`` of a branch sum. ``g``: the gradient at
    1/f of z's upsampled resolution (the branch output's; or z's own with f = 1, for a term
    whose upsample the caller transposed). ``dweight``/``dbias`` (C,) receive the affine's
    gradients (zero where it has no such parameter). ``batch``: the affine's mean and var are
    z's batch statistics. ``relu_of``: g is the raw gradient of ``act(sum)`` = relu_of, masked
    by relu_of > 0 in the kernels; ``base``: where to write that masked gradient (one term of a
    branch with a base)."""
    g: torch.Tensor
    z: torch.Tensor
    f: int
    affine: Affine
    batch: bool
    dweight: torch.Tensor
    dbias: torch.Tensor
    relu_of: Optional[torch.Tensor] = None
    base: Optional[torch.Tensor] = None

    @property
    def mode(self) -> AffineMode:
        return self.affine.mode

    @property
    def stores(self) -> bool:
        """Whether its gradient is written at z's resolution (block sums, or a masked pass-on)."""
        return self.f > 1 or (self.relu_of is not None and self.mode != AffineMode.BATCHNORM)

    def tiles(self, bm: int, bc: int) -> int:
        return triton.cdiv(self.z.shape[0] * self.z.shape[2] * self.z.shape[3], bm) * triton.cdiv(self.z.shape[1], bc)


def launch_terms_backward(terms: Sequence[TermGrad]) -> List[torch.Tensor]:
    """dz of each term, in three launches per 12 terms whatever branches they come from
    (block sums and partials; row sums; the BN terms' dz)."""
    dzs: List[torch.Tensor] = []
    for lo in range(0, len(terms), MAX_TERM_GRADS):
        dzs += _terms_backward(terms[lo:lo + MAX_TERM_GRADS])
    return dzs


def _terms_backward(terms: Sequence[TermGrad]) -> List[torch.Tensor]:
    for t in terms:     # rows the kernels do not write
        if t.mode != AffineMode.BATCHNORM:
            t.dweight.zero_()
        if t.mode == AffineMode.NONE:
            t.dbias.zero_()
    z0 = terms[0].z
    acc_t = acc_dtype(z0.dtype)
    bm, bc = _tiles([t.z.shape[1] for t in terms], z0.device)
    gsums = [empty_like_layout(t.z, t.z.shape, dtype=acc_t if t.mode == AffineMode.BATCHNORM else t.z.dtype)
             if t.stores else t.g for t in terms]
    parts = [[torch.empty((triton.cdiv(t.z.shape[0] * t.z.shape[2] * t.z.shape[3], bm), t.z.shape[1]), dtype=acc_t,
                          device=t.z.device) for _ in range(2 if t.mode == AffineMode.BATCHNORM else 1)] for t in terms]
    big = needs_int64(*[v for t in terms for v in (t.g, t.z, t.relu_of, t.base)])
    # 1. block sums and partials: every term but a plain unmasked one at full resolution (a term
    # with a base is a masked one)
    _reduce_launch([k for k, t in enumerate(terms) if t.mode != AffineMode.NONE or t.stores],
                   terms, gsums, parts, (bm, bc, big))
    # 2. the affine gradients: row sums of the partials
    rows = [k for k, t in enumerate(terms) if t.mode != AffineMode.NONE]
    if rows:
        blk = block_rows(min(terms[k].z.shape[1] for k in rows), 128)
        ts = tuple((tuple(parts[k]), parts[k][0].shape[0], (terms[k].dbias, terms[k].dweight), terms[k].z.shape[1])
                   for k in rows)
        offs = prefix_sums(triton.cdiv(terms[k].z.shape[1], blk) for k in rows)
        record_launch()
        terms_sum_rows_kernel[(offs[-1],)](ts, offs, len(rows), tuple(len(parts[k]) for k in rows), tl_dtype(z0.dtype),
                                           BLOCK_P=32, BLOCK_C=blk)
    # 3. dz of the BN terms; the others pass their (block-summed or masked) gradient on
    bns = [k for k, t in enumerate(terms) if t.mode == AffineMode.BATCHNORM]
    dzs = [empty_like_layout(t.z, t.z.shape) if k in bns else gsums[k] if t.stores else t.g.to(t.z.dtype).clone()
           for k, t in enumerate(terms)]
    _apply_launch(bns, terms, gsums, dzs, (bm, bc, big))
    return dzs


def _reduce_launch(red: Sequence[int], terms: Sequence[TermGrad], gsums, parts, tiles) -> None:
    """terms_reduce_kernel over the terms ``red`` (indices into the lists)."""
    if not red:
        return
    bm, bc, big = tiles
    ts, meta = [], []
    for k in red:
        t = terms[k]
        dummy = parts[k][0]
        mask_y = t.z if t.relu_of is None else t.relu_of      # views that are never read stand in
        ts.append((view(t.g), view(t.z), view(gsums[k]), t.affine.args(dummy), tuple(parts[k]), t.g.shape[2],
                   t.g.shape[3], t.z.shape[2], t.z.shape[3], t.z.shape[1], view(mask_y),
                   view(t.z if t.base is None else t.base)))
        meta.append((int(t.f), int(t.mode), t.stores, t.relu_of is not None, t.base is not None))
    offs = prefix_sums(terms[k].tiles(bm, bc) for k in red)
    record_launch()
    terms_reduce_kernel[(offs[-1],)](tuple(ts), offs, terms[0].z.shape[0], len(red), tuple(meta),
                                     tl_dtype(terms[0].z.dtype), big, BLOCK_M=bm, BLOCK_C=bc)


def _apply_launch(bns: Sequence[int], terms: Sequence[TermGrad], gsums, dzs, tiles) -> None:
    """terms_bn_apply_kernel over the BN terms ``bns``, writing their ``dzs``."""
    if not bns:
        return
    bm, bc, big = tiles
    ts = tuple((view(gsums[k]), view(terms[k].z), view(dzs[k]), terms[k].affine.args(dzs[k]), terms[k].dbias,
                terms[k].dweight, terms[k].z.shape[2], terms[k].z.shape[3], terms[k].z.shape[1],
                view(terms[k].z if terms[k].relu_of is None else terms[k].relu_of)) for k in bns)
    meta = tuple((bool(terms[k].batch), terms[k].relu_of is not None and not terms[k].stores) for k in bns)
    offs = prefix_sums(terms[k].tiles(bm, bc) for k in bns)
    record_launch()
    terms_bn_apply_kernel[(offs[-1],)](ts, offs, terms[0].z.shape[0], len(bns), meta, tl_dtype(terms[0].z.dtype),
                                       big, BLOCK_M=bm, BLOCK_C=bc)
