"""The output branches of an exchange unit: their sums, several a launch, and their fused backward.

``branch_sum(base, zs, factors, affines, batch, relu, upsample)``::

    y = act( base + sum_k up_{F_k}( BN_k(z_k) ) )

Each ``z_k`` is a conv output at 1/F_k of y's resolution (F = 1: the last conv of a downsample
chain; F = 2^(j-i): the 1x1 conv of an upsample path), and ``BN_k`` its BatchNorm with the given
mean and biased variance: the batch statistics (``batch[k]``, train mode, from
``hrfast.ops.batchnorm``) or the running ones. Upsampling is an index (nearest) or 4 taps
(bilinear), the upsampled terms are never materialized, and y is written once.

``branch_sums(branches, upsample)`` computes several such sums of different shapes in one
launch (the op ``hrfast::branch_sums``; ``branch_sum`` is one of them): every output branch of
an exchange unit, or every chain step of a level. Its backward (``branch_sums_backward``) is
three launches for all the terms of all the branches: the F x F block sums of the gradient,
masked by the ReLU inside (one term of each branch also writes its base's gradient), with the
two per-channel reductions of each BN backward; the row sums of those; the dz of every BN term.
A bilinear branch masks first (one launch), since its terms' gradients go through the resize's
transpose. With ``batch``, the gradient flows through the statistics as in ``nn.BatchNorm2d``
(they are z's own).

``exchange_branch(terms, segments, relu)`` is the inference form: the 1x1 convs of the upsample
paths and the last strided 3x3 convs of the chains run inside the same kernel as GEMM segments
on the low-resolution inputs, BN in their epilogue, so an output branch is one launch that
reads its inputs and writes y once. Not differentiable.

Shapes: base and y (B, C, H, W); z_k (B, C, ceil(H/F_k), ceil(W/F_k)); affine vectors (C,).
NHWC or NCHW (y follows base's layout). Kernels and launchers: ``kernels/branch_sum.py`` (the
sums, forward and backward), ``kernels/fused_gemm.py`` (``exchange_branch``). At most 3 terms
besides the base (4 in ``exchange_branch``, the identity included).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..kernels.launch import (
    FLOATS,
    HAS_TRITON,
    MAX_SEGMENTS,
    MAX_TERMS,
    Affine,
    AffineMode,
    Segment,
    Term,
    Upsample,
    acc_dtype,
    affine_lists,
    empty_like_layout,
    require_triton,
    spans,
)

if HAS_TRITON:
    from ..kernels.branch_sum import TermGrad, in_layout_of, launch_relu_mask, launch_sums, launch_terms_backward
    from ..kernels.fused_gemm import launch_fused_gemm


def _up_shape(z: torch.Tensor, f: int):
    return z.shape[2] * f, z.shape[3] * f


def check_branch_args(base, zs, factors, affines, batch) -> torch.Size:
    """Validate; return y's shape. Errors name the argument."""
    if not (len(zs) == len(factors) == len(affines) == len(batch)):
        raise ValueError(f"zs, factors, affines and batch must have the same length, got "
                         f"{len(zs)}, {len(factors)}, {len(affines)}, {len(batch)}")
    if base is None and not zs:
        raise ValueError("branch_sum needs a base or at least one term")
    if len(zs) > MAX_TERMS - 1:
        raise ValueError(f"branch_sum takes at most {MAX_TERMS - 1} terms besides the base, got {len(zs)}")
    ref = base if base is not None else zs[0]
    if ref.dim() != 4:
        raise ValueError(f"{'base' if base is not None else 'zs[0]'} must be (B, C, H, W), got {tuple(ref.shape)}")
    B, C = ref.shape[:2]
    H, W = ref.shape[2:] if base is not None else _up_shape(zs[0], int(factors[0]))
    for k, (z, f, a) in enumerate(zip(zs, factors, affines)):
        if int(f) < 1:
            raise ValueError(f"factors[{k}] must be >= 1, got {f}")
        want = (B, C, -(-H // f), -(-W // f))
        if tuple(z.shape) != want:
            raise ValueError(f"zs[{k}] must be (B, C, ceil(H/F), ceil(W/F)) = {want} for factor {f}, "
                             f"got {tuple(z.shape)}")
        for name in ("weight", "bias", "mean", "var"):
            v = getattr(a, name)
            if v is not None and tuple(v.shape) != (C,):
                raise ValueError(f"affines[{k}].{name} must be (C,) = ({C},), got {tuple(v.shape)}")
        if a.mode == AffineMode.BATCHNORM and a.weight is None:
            raise ValueError(f"affines[{k}] is a BatchNorm without weight: pass ones")
        if batch[k] and a.mode != AffineMode.BATCHNORM:
            raise ValueError(f"batch[{k}] needs a BatchNorm affine (mean and var)")
    for name, t in [("base", base)] + [(f"zs[{k}]", z) for k, z in enumerate(zs)]:
        if t is None:
            continue
        if t.dtype not in FLOATS:
            raise TypeError(f"{name} must be float32/float16/bfloat16/float64, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device}, expected {ref.device} like the other inputs")
    return torch.Size((B, C, H, W))


def _upsample(t: torch.Tensor, f: int, H: int, W: int, mode: int = Upsample.NEAREST) -> torch.Tensor:
    if f == 1:
        return t
    if mode == Upsample.NEAREST:
        return t.repeat_interleave(f, 2).repeat_interleave(f, 3)[:, :, :H, :W]
    return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=mode == Upsample.BILINEAR_ALIGNED)


def _apply_affine_ref(z: torch.Tensor, a: Affine, batch: bool) -> torch.Tensor:
    if a.mode == AffineMode.BATCHNORM:
        if batch:   # z's own statistics, with their gradient: the semantics of the fused op
            return F.batch_norm(z, None, None, a.weight, a.bias, True, 0.0, a.eps)
        return F.batch_norm(z, a.mean, a.var, a.weight, a.bias, False, 0.0, a.eps)
    if a.mode == AffineMode.BIAS:
        return z + a.bias.view(1, -1, 1, 1).to(z.dtype)
    return z


def branch_sum_ref(base: Optional[torch.Tensor], zs: Sequence[torch.Tensor], factors: Sequence[int],
                   affines: Sequence[Affine], batch: Sequence[bool], relu: bool,
                   upsample: int = Upsample.NEAREST) -> torch.Tensor:
    """Eager twin of :func:`branch_sum` (materializes the upsampled terms)."""
    _, _, H, W = check_branch_args(base, zs, factors, affines, batch)
    acc = base
    for z, f, a, bt in zip(zs, factors, affines, batch):
        term = _upsample(_apply_affine_ref(z, a, bt), int(f), H, W, upsample)
        acc = term if acc is None else acc + term
    return torch.relu(acc) if relu else acc


def _affines_from(bn_weight, bn_bias, bn_mean, bn_var, eps) -> List[Affine]:
    return [Affine.from_lists(bn_weight, bn_bias, bn_mean, bn_var, eps, k) for k in range(len(eps))]


def _y_like(base, zs, factors) -> torch.Tensor:
    if base is not None:
        return empty_like_layout(base, base.shape)
    B, C = zs[0].shape[:2]
    return empty_like_layout(zs[0], (B, C, *_up_shape(zs[0], factors[0])))


def _present(t: torch.Tensor) -> Optional[torch.Tensor]:
    """A base of the op schemas, where an empty 1-D tensor means none."""
    return None if t.dim() == 1 and t.numel() == 0 else t


@torch.library.custom_op("hrfast::branch_sums", mutates_args=())
def _branch_sums_op(bases: List[torch.Tensor], zs: List[torch.Tensor], counts: List[int], factors: List[int],
                    bn_weight: List[torch.Tensor], bn_bias: List[torch.Tensor], bn_mean: List[torch.Tensor],
                    bn_var: List[torch.Tensor], eps: List[float], batch: List[bool], relu: List[bool],
                    upsample: int) -> List[torch.Tensor]:
    """Branch i: ``act_i(bases[i] + sum of its counts[i] terms)``; the terms' lists are flat."""
    affines = _affines_from(bn_weight, bn_bias, bn_mean, bn_var, eps)
    ys, terms = [], []
    for base, (lo, hi) in zip(bases, spans(counts)):
        base = _present(base)
        ys.append(_y_like(base, zs[lo:hi], factors[lo:hi]))
        terms.append(([Term(base)] if base is not None else []) +
                     [Term(zs[k], factors[k], affines[k], upsample) for k in range(lo, hi)])
    launch_sums(ys, terms, relu)
    return ys


@_branch_sums_op.register_fake
def _(bases, zs, counts, factors, bn_weight, bn_bias, bn_mean, bn_var, eps, batch, relu, upsample):
    return [_y_like(_present(b), zs[lo:hi], factors[lo:hi]) for b, (lo, hi) in zip(bases, spans(counts))]


def _branch_grads(grad, y, zs, factors, affines, batch, relu, has_base, upsample, dws, dbs):
    """(the base's gradient or None, :class:`TermGrad` of each term) of one branch. A nearest
    branch's ReLU is masked inside the terms' kernels, which also write the base's gradient; a
    bilinear one is masked first, since its terms' gradients go through the resize's transpose."""
    bilinear = upsample != Upsample.NEAREST and any(int(f) > 1 for f in factors)
    fold = relu and len(zs) > 0 and not bilinear
    grad = in_layout_of(grad, y)
    g = launch_relu_mask(grad, y) if relu and not fold else grad
    g_base = empty_like_layout(y, y.shape, dtype=grad.dtype) if fold and has_base else None
    terms = []
    for k, (z, f, a, bt) in enumerate(zip(zs, factors, affines, batch)):
        gk, fk = g, int(f)
        if fk > 1 and upsample != Upsample.NEAREST:     # the bilinear term's gradient at z's resolution
            gk, fk = torch.ops.aten.upsample_bilinear2d_backward(
                g.to(acc_dtype(y.dtype)), list(y.shape[2:]), list(z.shape), upsample == Upsample.BILINEAR_ALIGNED), 1
        terms.append(TermGrad(gk, z, fk, a, bool(bt), dws[k], dbs[k], y if fold else None,
                              g_base if k == 0 else None))
    if has_base and g_base is None:
        g_base = g.clone() if g is grad else g
    return g_base, terms


@torch.library.custom_op("hrfast::branch_sums_backward", mutates_args=())
def _branch_sums_backward_op(grads: List[torch.Tensor], ys: List[torch.Tensor], zs: List[torch.Tensor],
                             counts: List[int], factors: List[int], bn_weight: List[torch.Tensor],
                             bn_bias: List[torch.Tensor], bn_mean: List[torch.Tensor], bn_var: List[torch.Tensor],
                             eps: List[float], batch: List[bool], relu: List[bool], has_base: List[bool],
                             upsample: int) -> List[torch.Tensor]:
    """[grad of each base (empty without one)] + [dz per term] + [dweight, dbias]: the affine
    gradients of all the terms, concatenated ((sum of their C,)); zero where a term has no such
    parameter. Every term of every branch shares the same three launches."""
    affines = _affines_from(bn_weight, bn_bias, bn_mean, bn_var, eps)
    widths = [int(z.shape[1]) for z in zs]
    dws = torch.empty(sum(widths), dtype=acc_dtype(ys[0].dtype), device=ys[0].device)
    dbs = torch.empty_like(dws)
    dw_rows, db_rows = torch.split(dws, widths), torch.split(dbs, widths)
    g_bases, terms = [], []
    for i, (lo, hi) in enumerate(spans(counts)):
        g_base, ts = _branch_grads(grads[i], ys[i], zs[lo:hi], factors[lo:hi], affines[lo:hi], batch[lo:hi],
                                   relu[i], has_base[i], upsample, dw_rows[lo:hi], db_rows[lo:hi])
        g_bases.append(g_base if g_base is not None else grads[i].new_empty(0))
        terms += ts
    dzs = launch_terms_backward(terms) if terms else []
    return g_bases + dzs + [dws, dbs]


@_branch_sums_backward_op.register_fake
def _(grads, ys, zs, counts, factors, bn_weight, bn_bias, bn_mean, bn_var, eps, batch, relu, has_base, upsample):
    g_bases = [empty_like_layout(y, y.shape, dtype=g.dtype) if hb else g.new_empty(0)
               for g, y, hb in zip(grads, ys, has_base)]
    dws = ys[0].new_empty((sum(int(z.shape[1]) for z in zs),), dtype=acc_dtype(ys[0].dtype))
    return g_bases + [empty_like_layout(z, z.shape) for z in zs] + [dws, torch.empty_like(dws)]


def _sums_setup(ctx, inputs, output):
    bases, zs, counts, factors, bn_weight, bn_bias, bn_mean, bn_var, eps, batch, relu, upsample = inputs
    ctx.args = (list(counts), list(factors), list(eps), list(batch), list(relu),
                [_present(b) is not None for b in bases], int(upsample))
    ctx.k = len(zs)
    ctx.save_for_backward(*output, *zs, *bn_weight, *bn_bias, *bn_mean, *bn_var)


def _sums_backward(ctx, grads):
    counts, factors, eps, batch, relu, has_base, upsample = ctx.args
    n, k = len(counts), ctx.k
    ys, rest = ctx.saved_tensors[:n], ctx.saved_tensors[n:]
    zs, bn_w, bn_b, bn_mean, bn_var = (list(rest[i * k:(i + 1) * k]) for i in range(5))
    grads = [torch.zeros_like(y) if g is None else g for g, y in zip(grads, ys)]
    outs = torch.ops.hrfast.branch_sums_backward(grads, list(ys), zs, counts, factors, bn_w, bn_b, bn_mean,
                                                 bn_var, eps, batch, relu, has_base, upsample)
    g_bases, dzs = outs[:n], outs[n:n + k]
    widths = [int(z.shape[1]) for z in zs]
    dws, dbs = torch.split(outs[-2], widths), torch.split(outs[-1], widths)
    gw = [None if w.numel() == 0 else dws[i].to(w.dtype) for i, w in enumerate(bn_w)]
    gb = [None if b.numel() == 0 else dbs[i].to(b.dtype) for i, b in enumerate(bn_b)]
    return ([g if hb else None for g, hb in zip(g_bases, has_base)], list(dzs), None, None, gw, gb,
            [None] * k, [None] * k, None, None, None, None)


_branch_sums_op.register_autograd(_sums_backward, setup_context=_sums_setup)


def branch_sums(branches: Sequence[tuple], upsample: int = Upsample.NEAREST) -> List[torch.Tensor]:
    """Several branch sums in one launch (and one fused backward of three launches):
    ``branches`` are tuples ``(base, zs, factors, affines, batch, relu)`` as :func:`branch_sum`
    takes them, on one device and dtype; their terms share ``upsample``."""
    if not branches:
        return []
    for br in branches:
        check_branch_args(*br[:5])
    b0 = branches[0]
    ref = b0[0] if b0[0] is not None else b0[1][0]
    require_triton(ref.device, "branch_sum")
    empty = ref.new_empty(0)
    bases = [empty if br[0] is None else br[0].to(ref.dtype) for br in branches]
    zs = [z.to(ref.dtype) for br in branches for z in br[1]]
    affines = [a for br in branches for a in br[3]]
    return torch.ops.hrfast.branch_sums(bases, zs, [len(br[1]) for br in branches],
                                        [int(f) for br in branches for f in br[2]], *affine_lists(affines, ref),
                                        [bool(b) for br in branches for b in br[4]], [bool(br[5]) for br in branches],
                                        Upsample.code(upsample))


def branch_sums_ref(branches: Sequence[tuple], upsample: int = Upsample.NEAREST) -> List[torch.Tensor]:
    """Eager twin of :func:`branch_sums`."""
    return [branch_sum_ref(*br, upsample=upsample) for br in branches]


def branch_sum(base: Optional[torch.Tensor], zs: Sequence[torch.Tensor], factors: Sequence[int],
               affines: Sequence[Affine], batch: Sequence[bool], relu: bool,
               upsample: int = Upsample.NEAREST) -> torch.Tensor:
    """``act(base + sum_k up_{F_k}(BN_k(z_k)))`` in one kernel (module doc). Differentiable in
    base, every z_k and every BN weight and bias; with ``batch[k]`` the mean and var of affine k
    must be z_k's batch statistics. ``upsample``: :class:`~hrfast.kernels.launch.Upsample`."""
    return branch_sums([(base, zs, factors, affines, batch, relu)], upsample)[0]


# ---------------------------------------------------------------------------------- inference form
def _segment_out_size(s: Segment):
    k = s.ks
    pad = (k - 1) // 2
    return [((n + 2 * pad - k) // s.stride + 1) * s.factor for n in s.x.shape[2:]]


def check_exchange_branch_args(terms: Sequence[Term], segments: Sequence[Segment]) -> None:
    if not terms or terms[0].factor != 1:
        raise ValueError("exchange_branch: terms[0] (the identity, factor 1) sets the output shape")
    if len(terms) > MAX_TERMS or len(segments) > MAX_SEGMENTS:
        raise ValueError(f"exchange_branch takes at most {MAX_TERMS} terms and {MAX_SEGMENTS} segments, "
                         f"got {len(terms)} and {len(segments)}")
    B, C, H, W = terms[0].z.shape
    for k, t in enumerate(terms):
        want = (B, C, -(-H // t.factor), -(-W // t.factor))
        if tuple(t.z.shape) != want:
            raise ValueError(f"terms[{k}].z must be {want} for factor {t.factor}, got {tuple(t.z.shape)}")
    for k, s in enumerate(segments):
        if len(s.weights) != 1 or s.weights[0].shape[:2] != (C, s.x.shape[1]) or s.ks not in (1, 3):
            raise ValueError(f"segments[{k}] needs one ({C}, {s.x.shape[1]}, k, k) weight, k 1 or 3")
        h, w = _segment_out_size(s)
        if s.x.shape[0] != B or not (H <= h < H + s.factor and W <= w < W + s.factor):
            raise ValueError(f"segments[{k}] (input {tuple(s.x.shape)}, stride {s.stride}, factor {s.factor}) "
                             f"does not cover the output ({B}, {C}, {H}, {W})")


def exchange_branch_ref(terms: Sequence[Term], segments: Sequence[Segment], relu: bool) -> torch.Tensor:
    """Eager twin of :func:`exchange_branch`."""
    check_exchange_branch_args(terms, segments)
    H, W = terms[0].z.shape[2:]
    acc = None
    for s in segments:
        k = s.ks
        z = F.conv2d(s.x, s.weights[0].to(s.x.dtype), stride=s.stride, padding=(k - 1) // 2)
        a = (s.affines or [Affine()])[0]
        acc_t = _upsample(_apply_affine_ref(z, a, False), s.factor, H, W)
        acc = acc_t if acc is None else acc + acc_t
    for t in terms:
        v = _upsample(_apply_affine_ref(t.z, t.affine, False), t.factor, H, W, t.mode)
        acc = v if acc is None else acc + v
    return torch.relu(acc) if relu else acc


@torch.library.custom_op("hrfast::exchange_branch", mutates_args=())
def _exchange_branch_op(term_z: List[torch.Tensor], term_factor: List[int], term_bn_weight: List[torch.Tensor],
                        term_bn_bias: List[torch.Tensor], term_bn_mean: List[torch.Tensor],
                        term_bn_var: List[torch.Tensor], term_eps: List[float],
                        seg_x: List[torch.Tensor], seg_weight: List[torch.Tensor], seg_stride: List[int],
                        seg_factor: List[int], seg_bn_weight: List[torch.Tensor],
                        seg_bn_bias: List[torch.Tensor], seg_bn_mean: List[torch.Tensor],
                        seg_bn_var: List[torch.Tensor], seg_eps: List[float], relu: bool,
                        upsample: int) -> torch.Tensor:
    base = term_z[0]
    y = empty_like_layout(base, base.shape)
    t_aff = _affines_from(term_bn_weight, term_bn_bias, term_bn_mean, term_bn_var, term_eps)
    s_aff = _affines_from(seg_bn_weight, seg_bn_bias, seg_bn_mean, seg_bn_var, seg_eps)
    terms = [Term(z, f, a, upsample) for z, f, a in zip(term_z, term_factor, t_aff)]
    segs = [Segment(x, [w], s, f, [a]) for x, w, s, f, a in zip(seg_x, seg_weight, seg_stride, seg_factor, s_aff)]
    launch_fused_gemm([y], segs, terms, relu=[relu])
    return y


@_exchange_branch_op.register_fake
def _(term_z, *args):
    return empty_like_layout(term_z[0], term_z[0].shape)


def exchange_branch(terms: Sequence[Term], segments: Sequence[Segment], relu: bool = True) -> torch.Tensor:
    """``act(sum_t up(affine_t(z_t)) + sum_s up(affine_s(conv(x_s, w_s))))`` in one kernel;
    inference only. ``terms[0]`` is the identity and sets y's shape and layout. Each segment
    has one weight and one affine, and comes up by nearest; the terms with a factor share one
    ``mode``."""
    check_exchange_branch_args(terms, segments)
    modes = {int(t.mode) for t in terms if t.factor > 1}
    if len(modes) > 1:
        raise ValueError(f"exchange_branch: the upsampled terms must share one mode, got {sorted(modes)}")
    ref = terms[0].z
    require_triton(ref.device, "exchange_branch")
    t_lists = affine_lists([t.affine for t in terms], ref)
    s_lists = affine_lists([(s.affines or [Affine()])[0] for s in segments], ref)
    return torch.ops.hrfast.exchange_branch(
        [t.z.to(ref.dtype) for t in terms], [int(t.factor) for t in terms], *t_lists,
        [s.x.to(ref.dtype) for s in segments], [s.weights[0] for s in segments], [int(s.stride) for s in segments],
        [int(s.factor) for s in segments], *s_lists, bool(relu), modes.pop() if modes else 0)
