"""Triton implicit-GEMM 3x3 convolution (stride 1 or 2, padding 1, no bias), NCHW, with a
fused epilogue, plus its two backward GEMMs.

Forward, as a GEMM over M = B*Ho*Wo output pixels, N = Cout, K = Cin*9::

    acc[m, n] = sum_k x_im2col[m, k] * w[n, k]
    y = act( acc * scale[n] + shift[n] + add[m, n] )      (each part optional)

The im2col matrix is never built: each K block is gathered from ``x`` with masks for the zero
padding. In eval mode ``scale, shift`` is the folded BatchNorm. ``add`` is the running branch
sum of an exchange unit, so the last conv of a downsample chain writes the sum directly.

Backward: ``dgrad`` (grad_x) is the same gather run backwards, M' = B*H*W input pixels,
N' = Cin, K' = Cout*9: an output pixel contributes only when (h + 1 - kh) is a multiple of the
stride. ``wgrad`` is grad_w[n, k] = sum_m grad_y[m, n] * x_im2col[m, k].
"""
import triton
import triton.language as tl


@triton.jit
def _split_pixel(offs, H, W):
    """Flat pixel index b*H*W + h*W + w -> (b, h, w)."""
    b = offs // (H * W)
    p = offs % (H * W)
    return b, p // W, p % W


@triton.jit
def _split_tap(offs):
    """Flat reduction index c*9 + kh*3 + kw (a weight column of the GEMM) -> (c, kh, kw)."""
    return offs // 9, (offs % 9) // 3, offs % 3


@triton.jit
def _gather_im2col(x_ptr, b, ho, wo, pix_ok, ci, kh, kw, tap_ok, Cin, H, W, STRIDE: tl.constexpr):
    """The im2col tile [pixels, taps] of x (B, Cin, H, W): rows are output pixels (b, ho, wo),
    columns taps (ci, kh, kw); zero where the tap falls in the padding or a mask is off."""
    hi = ho[:, None] * STRIDE - 1 + kh[None, :]
    wi = wo[:, None] * STRIDE - 1 + kw[None, :]
    mask = pix_ok[:, None] & tap_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
    return tl.load(x_ptr + ((b[:, None] * Cin + ci[None, :]) * H + hi) * W + wi, mask=mask, other=0.0)


@triton.jit
def conv3x3_fwd_kernel(x_ptr, w_ptr, y_ptr, scale_ptr, shift_ptr, add_ptr,
                       B, Cin, H, W, Cout, Ho, Wo,
                       STRIDE: tl.constexpr, HAS_AFFINE: tl.constexpr, HAS_ADD: tl.constexpr,
                       RELU: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    M = B * Ho * Wo
    K = Cin * 9
    b, ho, wo = _split_pixel(offs_m, Ho, Wo)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        ci, kh, kw = _split_tap(offs_k)
        a = _gather_im2col(x_ptr, b, ho, wo, offs_m < M, ci, kh, kw, offs_k < K, Cin, H, W, STRIDE)
        w_mask = (offs_n[None, :] < Cout) & (offs_k[:, None] < K)
        wt = tl.load(w_ptr + offs_n[None, :] * K + offs_k[:, None], mask=w_mask, other=0.0)
        acc += tl.dot(a.to(ACC), wt.to(ACC), out_dtype=ACC)
    if HAS_AFFINE:
        s = tl.load(scale_ptr + offs_n, mask=offs_n < Cout, other=0.0).to(ACC)
        t = tl.load(shift_ptr + offs_n, mask=offs_n < Cout, other=0.0).to(ACC)
        acc = acc * s[None, :] + t[None, :]
    y_off = ((b[:, None] * Cout + offs_n[None, :]) * Ho + ho[:, None]) * Wo + wo[:, None]
    y_mask = (offs_m[:, None] < M) & (offs_n[None, :] < Cout)
    if HAS_ADD:
        acc += tl.load(add_ptr + y_off, mask=y_mask, other=0.0).to(ACC)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def conv3x3_dgrad_kernel(gy_ptr, w_ptr, gx_ptr, B, Cin, H, W, Cout, Ho, Wo,
                         STRIDE: tl.constexpr, ACC: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)     # input pixels
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)                     # input channels
    M = B * H * W
    K = Cout * 9
    b, h, w = _split_pixel(offs_m, H, W)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        co, kh, kw = _split_tap(offs_k)
        th = h[:, None] + 1 - kh[None, :]          # = ho * STRIDE
        tw = w[:, None] + 1 - kw[None, :]
        ho = th // STRIDE
        wo = tw // STRIDE
        ok = (th >= 0) & (tw >= 0) & (th % STRIDE == 0) & (tw % STRIDE == 0) & (ho < Ho) & (wo < Wo)
        g_mask = (offs_m[:, None] < M) & (offs_k[None, :] < K) & ok
        g = tl.load(gy_ptr + ((b[:, None] * Cout + co[None, :]) * Ho + ho) * Wo + wo, mask=g_mask, other=0.0)
        # w[co, ci, kh, kw] at row k = co*9 + kh*3 + kw, column ci
        w_mask = (offs_k[:, None] < K) & (offs_n[None, :] < Cin)
        wt = tl.load(w_ptr + (co[:, None] * Cin + offs_n[None, :]) * 9 + (offs_k[:, None] % 9), mask=w_mask, other=0.0)
        acc += tl.dot(g.to(ACC), wt.to(ACC), out_dtype=ACC)
    x_off = ((b[:, None] * Cin + offs_n[None, :]) * H + h[:, None]) * W + w[:, None]
    tl.store(gx_ptr + x_off, acc.to(gx_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < Cin))


@triton.jit
def conv3x3_wgrad_kernel(gy_ptr, x_ptr, gw_ptr, B, Cin, H, W, Cout, Ho, Wo,
                         STRIDE: tl.constexpr, ACC: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # GEMM (Cout x Cin*9) = grad_y^T (Cout x M) @ im2col(x) (M x Cin*9); here BLOCK_M tiles
    # Cout, BLOCK_N tiles Cin*9 and BLOCK_K the reduction over the M output pixels.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_co = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_kk = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    KK = Cin * 9
    M = B * Ho * Wo
    ci, kh, kw = _split_tap(offs_kk)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for m0 in range(0, M, BLOCK_K):
        offs_p = (m0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        b, ho, wo = _split_pixel(offs_p, Ho, Wo)
        g_mask = (offs_co[:, None] < Cout) & (offs_p[None, :] < M)
        g = tl.load(gy_ptr + ((b[None, :] * Cout + offs_co[:, None]) * Ho + ho[None, :]) * Wo + wo[None, :],
                    mask=g_mask, other=0.0)
        a = _gather_im2col(x_ptr, b, ho, wo, offs_p < M, ci, kh, kw, offs_kk < KK, Cin, H, W, STRIDE)
        acc += tl.dot(g.to(ACC), a.to(ACC), out_dtype=ACC)
    tl.store(gw_ptr + offs_co[:, None] * KK + offs_kk[None, :], acc.to(gw_ptr.dtype.element_ty),
             mask=(offs_co[:, None] < Cout) & (offs_kk[None, :] < KK))


# Tile shapes. On the GPU all three kernels are autotuned over these (keyed on the GEMM sizes); the
# candidates cover the W32/W48 chains (Cin 32..384, Cout 64..384, outputs 8x6..32x24 at batch
# 32-64) in fp32/bf16/fp16. The CPU interpreter uses the first one.
CONV_CONFIGS = [
    dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32),
    dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32),
    dict(BLOCK_M=256, BLOCK_N=64, BLOCK_K=32),
]


def autotuned(kernel, key=("B", "Cin", "Cout", "Ho", "Wo")):
    """``kernel`` wrapped in ``triton.autotune`` over CONV_CONFIGS (GPU use)."""
    configs = [triton.Config(c, num_warps=4 if c["BLOCK_M"] * c["BLOCK_N"] <= 4096 else 8, num_stages=3)
               for c in CONV_CONFIGS]
    return triton.autotune(configs=configs, key=list(key))(kernel)
