"""Triton kernels of the fused exchange-unit sum.

Forward, for one output branch of shape (B, C, H, W)::

    y = act( base + sum_k up_{F_k}( z_k * scale_k[c] + shift_k[c] ) )

``z_k`` is a convolution output at 1/F_k of the output resolution (F_k = 1 for the last conv
of a downsample chain, 2^(j-i) for the 1x1 conv of an upsample path). ``scale``/``shift`` are
the BatchNorm affine of that conv. ``up`` is nearest upsampling, ``act`` is ReLU or identity.
One program covers BLOCK pixels of one (b, c) plane. It reads each low-resolution value
straight from ``z_k`` (no upsampled copy is made) and writes ``y`` once.

Backward, per input: ``gsum_k`` (B, C, H/F_k, W/F_k) = the F_k x F_k block sums of
``grad_y * (y > 0)``, i.e. the gradient of the upsampled BN output w.r.t. its low-resolution
source. The BN/conv gradients follow from it at low resolution (see ``hrfast.ops.fused_sum``).
"""
import triton
import triton.language as tl

MAX_TERMS = 3  # a 4-branch unit sums at most 3 other branches into each output


@triton.jit
def _affine_term(z_ptr, s_ptr, t_ptr, bc, c, h, w, Hk, Wk, F: tl.constexpr, mask, ACC: tl.constexpr):
    idx = bc * Hk * Wk + (h // F) * Wk + (w // F)
    v = tl.load(z_ptr + idx, mask=mask, other=0.0).to(ACC)
    s = tl.load(s_ptr + c).to(ACC)
    t = tl.load(t_ptr + c).to(ACC)
    return v * s + t


@triton.jit
def fused_sum_fwd_kernel(y_ptr, base_ptr,
                         z0_ptr, s0_ptr, t0_ptr, H0, W0,
                         z1_ptr, s1_ptr, t1_ptr, H1, W1,
                         z2_ptr, s2_ptr, t2_ptr, H2, W2,
                         C, H, W,
                         HAS_BASE: tl.constexpr, N_TERMS: tl.constexpr,
                         F0: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr,
                         RELU: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    bc = tl.program_id(0).to(tl.int64)           # b * C + c
    c = bc % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    h = offs // W
    w = offs % W
    acc = tl.zeros([BLOCK], dtype=ACC)
    if HAS_BASE:
        acc += tl.load(base_ptr + bc * H * W + offs, mask=mask, other=0.0).to(ACC)
    if N_TERMS > 0:
        acc += _affine_term(z0_ptr, s0_ptr, t0_ptr, bc, c, h, w, H0, W0, F0, mask, ACC)
    if N_TERMS > 1:
        acc += _affine_term(z1_ptr, s1_ptr, t1_ptr, bc, c, h, w, H1, W1, F1, mask, ACC)
    if N_TERMS > 2:
        acc += _affine_term(z2_ptr, s2_ptr, t2_ptr, bc, c, h, w, H2, W2, F2, mask, ACC)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(y_ptr + bc * H * W + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def fused_sum_bwd_kernel(gsum_ptr, gy_ptr, y_ptr, H, W, Hk, Wk,
                         F: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    bc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Hk * Wk
    hk = offs // Wk
    wk = offs % Wk
    acc = tl.zeros([BLOCK], dtype=ACC)
    for dy in tl.static_range(F):
        for dx in tl.static_range(F):
            hh = hk * F + dy
            ww = wk * F + dx
            m = mask & (hh < H) & (ww < W)
            idx = bc * H * W + hh * W + ww
            g = tl.load(gy_ptr + idx, mask=m, other=0.0).to(ACC)
            if RELU:
                yv = tl.load(y_ptr + idx, mask=m, other=0.0)
                g = tl.where(yv > 0, g, 0.0)
            acc += g
    tl.store(gsum_ptr + bc * Hk * Wk + offs, acc.to(gsum_ptr.dtype.element_ty), mask=mask)


def block_size(n: int) -> int:
    """Pixels per program: a power of two covering small planes, at most 1024."""
    return max(16, min(1024, triton.next_power_of_2(max(int(n), 1))))
