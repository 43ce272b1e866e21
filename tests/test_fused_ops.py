"""The exchange unit's Triton ops against their reference twins (Triton interpreter on the CPU,
CUDA when present): ``conv`` (grouped, with BN statistics), ``conv_bn_act``, ``bn_stats``,
``bn_partials``, ``branch_sum`` / ``branch_sums`` and ``exchange_branch``.

Tolerances. fp32: 1e-5 relative to the output's scale; the kernels sum Cin*k*k products in
another order than oneDNN/cuDNN, a few float32 ulps apart. Gradients that are sums over
B*H*W pixels (weights, BN parameters) get 1e-5 of their own largest value. bf16/fp16 follow
the rule "error at most 2x eager's" as written: both relative errors (norms) against a float64
run of the reference, no slack (``conftest.assert_within_twice_eager``). On CUDA, fp32 tests
switch TF32 off in both paths (``tf32_off``): TF32's 10-bit mantissa would need 1e-3.
"""
import os

import pytest
import torch
from conftest import assert_within_twice_eager

from hrfast.kernels.launch import HAS_TRITON, Affine, Segment, Term, Upsample, count_launches, stats_tile
from hrfast.ops.batchnorm import bn_partials, bn_stats, bn_stats_many, bn_stats_ref
from hrfast.ops.branch_sum import (
    branch_sum,
    branch_sum_ref,
    branch_sums,
    branch_sums_ref,
    exchange_branch,
    exchange_branch_ref,
)
from hrfast.ops.conv import conv, conv_bn_act, conv_bn_act_ref, conv_ref, convs, pack_weights

pytestmark = [pytest.mark.usefixtures("tf32_off"), pytest.mark.skipif(
    not HAS_TRITON or not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()),
    reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 (make test sets it)")]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def rand(*shape, dtype=torch.float32, fmt=torch.contiguous_format, grad=True, scale=1.0):
    t = (torch.randn(*shape, dtype=torch.float64) * scale).to(DEV, dtype)
    if len(shape) == 4:
        t = t.contiguous(memory_format=fmt)
    return t.requires_grad_(grad)


def bn_affine(C, z=None, grad=True, dtype=torch.float32):
    """A BN affine with non-trivial parameters; the batch statistics of z when given."""
    w = (torch.rand(C, dtype=torch.float64) + 0.5).to(DEV, dtype).requires_grad_(grad)
    b = (torch.randn(C, dtype=torch.float64) * 0.3).to(DEV, dtype).requires_grad_(grad)
    if z is not None:
        var, mean = torch.var_mean(z.detach().double(), dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = torch.randn(C, dtype=torch.float64) * 0.3, torch.rand(C, dtype=torch.float64) + 0.5
    return Affine(w, b, mean.to(DEV, dtype), var.to(DEV, dtype), 1e-5)


def close(a, r, tol=1e-5):
    torch.testing.assert_close(a, r, atol=tol * max(1.0, r.abs().max().item()), rtol=tol)


# (B, Cin, H, W, widths, k, stride): minimal; odd sizes with three groups (the merged first
# convs of the chains leaving a branch); a W32 stage-3 branch-1 shape (64 -> 128, 3x3 s2,
# batch 1 at 16x12 to keep the interpreter fast); a 1x1 with groups (merged upsample convs);
# a stride-1 3x3 (a transition's width change).
CONV_SHAPES = [(1, 1, 2, 2, (1,), 3, 2), (2, 5, 7, 9, (3, 4, 6), 3, 2), (1, 64, 16, 12, (128,), 3, 2),
               (2, 6, 5, 3, (4, 8), 1, 1), (2, 3, 6, 5, (4,), 3, 1)]


@pytest.mark.parametrize("B,Cin,H,W,widths,k,stride", CONV_SHAPES)
@pytest.mark.parametrize("fmt", LAYOUTS)
def test_conv_forward_backward_fp32(B, Cin, H, W, widths, k, stride, fmt):
    x = rand(B, Cin, H, W, fmt=fmt)
    ws = [rand(c, Cin, k, k, fmt=fmt) for c in widths]
    out = conv(x, ws, stride)
    ref = conv_ref(x, ws, stride)
    for a, r in zip(out, ref):
        assert a.stride() == r.contiguous(memory_format=fmt).stride()   # the input's layout
        close(a, r)
    gys = [torch.randn_like(r) for r in ref]
    for a, r in zip(torch.autograd.grad(out, [x] + ws, gys), torch.autograd.grad(ref, [x] + ws, gys)):
        close(a, r)


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_convs_of_several_inputs_equal_one_conv_each(fmt):
    """Every shape of CONV_SHAPES (1x1 and 3x3, strides 1 and 2, 1 to 3 groups, 1 to 64 input
    channels) and two of 128 output pixels, which the interpreter splits (split-K), in one
    ``convs`` call, whose backward is one launch per 6 convs and one sum of the split ones'
    partials: values and every gradient equal conv_ref's."""
    torch.manual_seed(0)
    shapes = [(2, 3, 8, 8, (5,), 1, 1)] + CONV_SHAPES + [(1, 4, 3, 3, (2,), 3, 2), (2, 4, 16, 16, (3,), 3, 2)]
    problems = [(rand(B, Cin, H, W, fmt=fmt), [rand(c, Cin, k, k, fmt=fmt) for c in widths], stride)
                for B, Cin, H, W, widths, k, stride in shapes]
    outs = convs(problems)
    refs = [conv_ref(*p) for p in problems]
    for out, ref in zip(outs, refs):
        for a, r in zip(out, ref):
            assert a.stride() == r.contiguous(memory_format=fmt).stride()
            close(a, r)
    leaves = [t for x, ws, _ in problems for t in [x] + ws]
    gys = [torch.randn_like(r) for ref in refs for r in ref]
    with count_launches() as n:
        got = torch.autograd.grad([a for o in outs for a in o], leaves, gys)
    assert n.n == 2 + 2     # 6 + 2 convs, each chunk with a split conv: a backward and a sum each
    for a, r in zip(got, torch.autograd.grad([r for ref in refs for r in ref], leaves, gys)):
        close(a, r)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pack_weights_is_a_cast_to_channels_last(dtype):
    """pack_weights equals its twin ``w.to(dtype, memory_format=channels_last)`` bit for bit
    (round to nearest even, the interpreter too), in that layout, from NCHW and channels_last
    float32 weights, 1x1 and 3x3, in one launch; and convs reading the packed copies give the
    parameters float32 gradients equal to those of convs reading the bf16 weights."""
    torch.manual_seed(0)
    ws = [rand(5, 3, 3, 3), rand(7, 6, 1, 1, fmt=torch.channels_last), rand(2, 33, 3, 3, fmt=torch.channels_last)]
    with count_launches() as n:
        packed = pack_weights(ws, dtype)
    assert n.n == 1
    for p, w in zip(packed, ws):
        twin = w.detach().to(dtype, memory_format=torch.channels_last)
        assert p.dtype == dtype and p.stride() == twin.stride() and torch.equal(p, twin)
    x = rand(2, 3, 9, 7, dtype=dtype, fmt=torch.channels_last)
    w = rand(4, 3, 3, 3)
    (y,) = convs([(x, [w], 2)], packed=[pack_weights([w], dtype)])
    wd = w.detach().to(dtype).requires_grad_()
    (yr,) = convs([(x, [wd], 2)])
    assert torch.equal(y[0], yr[0])
    gy = torch.randn_like(y[0])
    gw, gx = torch.autograd.grad(y[0], [w, x], gy)
    gwr, gxr = torch.autograd.grad(yr[0], [wd, x], gy)
    assert gw.dtype == torch.float32 and torch.equal(gx, gxr)
    close(gw, gwr.float(), 1e-2)   # the same float32 sums; gwr is then rounded to 16 bits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv_low_precision_error_within_twice_eager(dtype):
    x = rand(2, 16, 9, 8, dtype=dtype, fmt=torch.channels_last)
    ws = [rand(c, 16, 3, 3, dtype=dtype, scale=0.2) for c in (8, 16)]
    gys = [rand(2, c, 5, 4, dtype=dtype, grad=False) for c in (8, 16)]
    leaves64 = [t.detach().double().requires_grad_() for t in [x] + ws]
    gold = conv_ref(leaves64[0], leaves64[1:], 2)
    gold_g = torch.autograd.grad(gold, leaves64, [g.double() for g in gys])
    fast, eager = conv(x, ws, 2), conv_ref(x, ws, 2)
    assert_within_twice_eager(fast, eager, gold, "outputs")
    assert_within_twice_eager(torch.autograd.grad(fast, [x] + ws, gys), torch.autograd.grad(eager, [x] + ws, gys),
                              gold_g, "gradients of x, weights")


def test_conv_gradcheck_fp64():
    x = rand(1, 2, 5, 4, dtype=torch.float64)
    ws = [rand(c, 2, 3, 3, dtype=torch.float64) for c in (2, 3)]
    assert torch.autograd.gradcheck(lambda x, a, b: conv(x, [a, b], 2), (x, *ws), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_stats_epilogue_and_running_update_match_batchnorm(dtype, momentum):
    """conv(stats=True) + bn_stats == nn.BatchNorm2d's batch statistics and running-stat update,
    per group; float64 inputs give float64 statistics (to 1e-12)."""
    x = rand(3, 6, 11, 7, dtype=dtype, grad=False, fmt=torch.channels_last) + 2.0   # a non-zero mean
    ws = [rand(c, 6, 3, 3, dtype=dtype, grad=False) for c in (5, 3)]
    outs = conv(x, ws, 2, stats=True)
    bns = [torch.nn.BatchNorm2d(c, momentum=momentum).to(DEV, dtype) for c in (5, 3)]
    refs = [torch.nn.BatchNorm2d(c, momentum=momentum).to(DEV, dtype) for c in (5, 3)]
    for step in range(2):   # the second call checks momentum=None's cumulative average
        M = outs[0].shape[0] * outs[0].shape[2] * outs[0].shape[3]
        mean, var = bn_stats(outs[2], outs[3], M, bns, update=True)
        assert mean.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        z = torch.cat(conv_ref(x, ws, 2), 1)
        v, m = torch.var_mean(z.double(), dim=(0, 2, 3), unbiased=False)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        close(mean.double(), m, tol)
        close(var.double(), v, tol)
        for r, zz in zip(refs, torch.split(z, [5, 3], 1)):
            r.train()(zz)
        for bn, r in zip(bns, refs):
            close(bn.running_mean, r.running_mean, tol)
            close(bn.running_var, r.running_var, tol)
            assert bn.num_batches_tracked.item() == r.num_batches_tracked.item() == step + 1


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_stats_many_equals_one_call_per_conv(momentum):
    """Seven convs' statistics (three launches: 3 + 3 + 1), of other sizes and group counts,
    equal a bn_stats call per conv, running statistics and batch counters included."""
    shapes = [(5, 3), (4,), (7, 2, 3), (6,), (3, 3), (8,), (2, 5)]
    items, singles = [], []
    for k, widths in enumerate(shapes):
        x = rand(2, 4, 6 + k, 5, grad=False, fmt=torch.channels_last) + 1.0
        outs = conv(x, [rand(w, 4, 3, 3, grad=False) for w in widths], 2, stats=True)
        M = outs[0].shape[0] * outs[0].shape[2] * outs[0].shape[3]
        bns = [torch.nn.BatchNorm2d(w, momentum=momentum).to(DEV) for w in widths]
        twins = [torch.nn.BatchNorm2d(w, momentum=momentum).to(DEV) for w in widths]
        items.append((outs[-2], outs[-1], M, bns))
        singles.append((outs[-2], outs[-1], M, twins))
    for _ in range(2):
        got = bn_stats_many(items, update=True)
        want = [bn_stats(*it[:3], it[3], update=True) for it in singles]
        for (m, v), (mr, vr) in zip(got, want):
            close(m, mr, 1e-6)
            close(v, vr, 1e-6)
    for it, tw in zip(items, singles):
        for bn, r in zip(it[3], tw[3]):
            close(bn.running_mean, r.running_mean, 1e-6)
            close(bn.running_var, r.running_var, 1e-6)
            assert bn.num_batches_tracked.item() == r.num_batches_tracked.item() == 2


def test_gpu_tiles_fill_the_machine():
    """The GPU's GEMM tiles (chosen here as for an offline GPU): 128-pixel tiles where the grid
    fills the 132 SMs, else 64-pixel tiles, else half, else a quarter of the channels a tile."""
    from hrfast.kernels.fused_gemm import SMS, gemm_tiles
    from hrfast.kernels.launch import offline_gpu
    cpu = torch.device("cpu")
    with offline_gpu():
        big = gemm_tiles(64 * 64 * 48, 32, 32, cpu)      # W32 branch 0 at batch 64: 1536 tiles of 128
        low = gemm_tiles(64 * 8 * 6, 256, 256, cpu)      # branch 3: 48 tiles of 128 x 128, 96 of 64 x 128
        up = gemm_tiles(64 * 8 * 6, 96, 256, cpu)        # branch 3's 1x1 convs up: 96 tiles of 64 x 64
        tiny = gemm_tiles(96, 32, 32, cpu)               # nothing fills the machine: the smallest tried
    assert (big["BLOCK_M"], big["BLOCK_N"]) == (128, 32)
    assert (low["BLOCK_M"], low["BLOCK_N"]) == (64, 64) and 48 * 4 >= SMS
    assert (up["BLOCK_M"], up["BLOCK_N"]) == (64, 32) and 48 * 3 >= SMS
    assert (tiny["BLOCK_M"], tiny["BLOCK_N"]) == (64, 16)


def test_stats_tile_recovers_the_pixel_tile():
    for tile in (16, 32, 64, 128):
        for M in (1, tile - 1, tile, tile + 1, 3 * tile + 5, 1000):
            P = -(-M // tile)
            counts = [min(tile, M - p * stats_tile(M, P)) for p in range(P)]
            assert sum(counts) == M and all(c > 0 for c in counts)


def test_bn_partials_and_ref_twin_agree():
    z = rand(2, 5, 7, 9, grad=False, fmt=torch.channels_last) * 3 + 1
    pm, pm2 = bn_partials(z)
    mean, var = bn_stats(pm, pm2, 2 * 7 * 9)
    mean_r, var_r = bn_stats_ref(pm, pm2, 2 * 7 * 9, [], [], [], [], [], False)
    v, m = torch.var_mean(z, dim=(0, 2, 3), unbiased=False)
    close(mean, m)
    close(var, v)
    close(mean_r, m)
    close(var_r, v)


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("mode", ["bn", "bias"])
def test_conv_bn_act_matches_reference(fmt, mode):
    x = rand(2, 6, 9, 7, fmt=fmt, grad=False)
    ws = [rand(c, 6, 3, 3, fmt=fmt, grad=False) for c in (4, 5, 3)]
    affs = [bn_affine(c, grad=False) if mode == "bn" else Affine(bias=rand(c, grad=False)) for c in (4, 5, 3)]
    relu = [False, True, True]   # a length-1 chain's output, two intermediate steps
    with torch.no_grad():
        for a, r in zip(conv_bn_act(x, ws, 2, affs, relu), conv_bn_act_ref(x, ws, 2, affs, relu)):
            close(a, r)


# (B, C, H, W, factors, base): minimal; odd sizes with factors 1, 2, 4; W32 stage-4 branch 0
# (32 channels, factors 2, 4, 8, a small plane: batch statistics over 8 values at F = 8); no
# base (a chain step's BN + ReLU).
BRANCH_SHAPES = [(2, 1, 2, 2, (2,), True), (3, 5, 12, 9, (1, 2, 4), True), (2, 32, 16, 16, (2, 4, 8), True),
                 (2, 4, 6, 6, (1,), False)]


@pytest.mark.parametrize("B,C,H,W,factors,base", BRANCH_SHAPES)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("fmt", LAYOUTS)
def test_branch_sum_forward_backward_fp32(B, C, H, W, factors, base, batch, fmt):
    b = rand(B, C, H, W, fmt=fmt) if base else None
    zs = [rand(B, C, -(-H // f), -(-W // f), fmt=fmt) for f in factors]
    affs = [bn_affine(C, z if batch else None) for z in zs]
    args = (b, zs, list(factors), affs, [batch] * len(zs), True)
    y, yr = branch_sum(*args), branch_sum_ref(*args)
    assert y.stride() == yr.contiguous(memory_format=fmt).stride()
    close(y, yr)
    leaves = ([b] if base else []) + zs + [a.weight for a in affs] + [a.bias for a in affs]
    gy = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, leaves, gy), torch.autograd.grad(yr, leaves, gy)):
        close(a, r)


# bilinear terms (HRNetV2): both corner rules; odd sizes whose low-resolution planes are not
# whole multiples (12 x 9 -> 3 x 3 at F = 4); a 1-pixel plane (align_corners' 0 / 0 scale)
BILINEAR_SHAPES = [(2, 5, 12, 9, (1, 2, 4)), (2, 3, 2, 8, (2, 8))]


@pytest.mark.parametrize("B,C,H,W,factors", BILINEAR_SHAPES)
@pytest.mark.parametrize("mode", [Upsample.BILINEAR, Upsample.BILINEAR_ALIGNED])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("fmt", LAYOUTS)
def test_branch_sum_bilinear_forward_backward_fp32(B, C, H, W, factors, mode, batch, fmt):
    b = rand(B, C, H, W, fmt=fmt)
    zs = [rand(B, C, -(-H // f), -(-W // f), fmt=fmt) for f in factors]
    affs = [bn_affine(C, z if batch else None) for z in zs]
    args = (b, zs, list(factors), affs, [batch] * len(zs), True, mode)
    y, yr = branch_sum(*args), branch_sum_ref(*args)
    assert y.stride() == yr.contiguous(memory_format=fmt).stride()
    close(y, yr)
    leaves = [b] + zs + [a.weight for a in affs] + [a.bias for a in affs]
    gy = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, leaves, gy), torch.autograd.grad(yr, leaves, gy)):
        close(a, r)


@pytest.mark.parametrize("mode", [Upsample.BILINEAR, Upsample.BILINEAR_ALIGNED])
def test_branch_sum_bilinear_gradcheck_fp64(mode):
    def fn(b, z0, w0, b0):
        a0 = bn_affine(2, z0, dtype=torch.float64)
        return branch_sum(b, [z0], [2], [Affine(w0, b0, a0.mean, a0.var, 1e-5)], [True], False, mode)
    args = (rand(2, 2, 5, 6, dtype=torch.float64), rand(2, 2, 3, 3, dtype=torch.float64),
            rand(2, dtype=torch.float64), rand(2, dtype=torch.float64))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, fast_mode=True)


def test_an_interpreter_that_cannot_run_the_kernels_is_named(monkeypatch):
    """Triton 3.6's interpreter with NumPy 2.4 or newer fails inside every multi-problem launch
    (seen with the GPU image's Triton on the CPU); the op fronts say so in one line instead."""
    import numpy
    import triton

    from hrfast.kernels import launch
    # CPU tensors under the interpreter on any machine: on a GPU machine DEV's tensors would
    # take the compiled path, where the interpreter's problem does not apply
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for tv, nv, bad in [("3.6.0", "2.4.0", True), ("3.6.0", "2.3.5", False), ("3.7.0", "2.5.2", False)]:
        monkeypatch.setattr(triton, "__version__", tv)
        monkeypatch.setattr(numpy, "__version__", nv)
        assert (launch.interpreter_problem() is not None) == bad, (tv, nv)
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.5.2")
    with pytest.raises(RuntimeError, match=r"^branch_sum: Triton 3\.6\.0's CPU interpreter .* NumPy 2\.5\.2: "
                                           r"install 'numpy<2\.4' or 'triton>=3\.7'$"):
        branch_sum(torch.randn(1, 2, 4, 4), [torch.randn(1, 2, 2, 2)], [2], [Affine()], [False], True)
    from hrfast.cli import environment_lines
    assert environment_lines()[-1].startswith("TRITON_INTERPRET=1: Triton 3.6.0's CPU interpreter cannot run")
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    assert not environment_lines()[-1].startswith("TRITON_INTERPRET")   # hrfast info says nothing then
    monkeypatch.setattr(numpy, "__version__", "2.5.2")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert launch.interpreter_problem() is None         # no problem where the interpreter is not chosen


def test_upsample_code_takes_members_and_ints_and_names_a_bad_one():
    """The op front's check of ``upsample`` (not ``Upsample(value)``, which torch 2.11's Dynamo
    cannot trace: tests/test_fused_exchange.py::test_compiles_fullgraph runs the front compiled)."""
    assert [Upsample.code(m) for m in Upsample] == [0, 1, 2]
    assert Upsample.code(1) == 1 and type(Upsample.code(Upsample.BILINEAR)) is int
    with pytest.raises(ValueError, match=r"upsample must be one of \[0, 1, 2\] \(Upsample\), got 3"):
        Upsample.code(3)


def test_branch_sum_bias_and_plain_terms():
    """A folded BN (bias only) and a plain term, with and without the ReLU."""
    b = rand(2, 3, 8, 6)
    zs = [rand(2, 3, 4, 3), rand(2, 3, 8, 6)]
    affs = [Affine(bias=rand(3)), Affine()]
    for relu in (True, False):
        args = (b, zs, [2, 1], affs, [False, False], relu)
        y, yr = branch_sum(*args), branch_sum_ref(*args)
        close(y, yr)
        leaves = [b] + zs + [affs[0].bias]
        for a, r in zip(torch.autograd.grad(y, leaves, y.detach()), torch.autograd.grad(yr, leaves, y.detach())):
            close(a, r)


def _unit_branches(B, widths, H, W, fmt, batch, relus, bases, dtype=torch.float32):
    """The branch sums of a unit with len(widths) outputs: output i at 1/2^i of (H, W) sums its
    base (when bases[i]) and one BN term from every other branch j (F = 2^(j-i) for j > i, F = 1
    for a chain's last conv)."""
    n = len(widths)
    branches = []
    for i, C in enumerate(widths):
        Hi, Wi = -(-H // 2 ** i), -(-W // 2 ** i)
        fs = [2 ** (j - i) if j > i else 1 for j in range(n) if j != i]
        zs = [rand(B, C, -(-Hi // f), -(-Wi // f), fmt=fmt, dtype=dtype) for f in fs]
        affs = [bn_affine(C, z if batch else None, dtype=dtype) for z in zs]
        base = rand(B, C, Hi, Wi, fmt=fmt, dtype=dtype) if bases[i] else None
        branches.append((base, zs, fs, affs, [batch] * len(zs), relus[i]))
    return branches


def _leaves(branches):
    return [t for br in branches for t in ([br[0]] if br[0] is not None else []) + list(br[1])
            + [a.weight for a in br[3]] + [a.bias for a in br[3]]]


# the outputs of a 4-branch unit (odd sizes, widths 3..16, one branch without its base, one
# without the ReLU); 6 chain steps alone (more than the 4 sums of one launch)
@pytest.mark.parametrize("widths,relus,bases", [((3, 5, 8, 16), (True, True, False, True), (True, False, True, True)),
                                                ((4,) * 6, (True,) * 6, (False,) * 6)],
                         ids=["unit", "chain-steps"])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("fmt", LAYOUTS)
def test_branch_sums_equal_one_call_per_branch(widths, relus, bases, batch, fmt):
    """Several branches of different widths and resolutions in one launch each way: values and
    every gradient equal the reference twin's."""
    torch.manual_seed(0)
    if len(widths) == 6:   # chain steps: one BN term each, no base
        branches = [(None, [rand(2, C, 5, 7, fmt=fmt)], [1], [None], [batch], True) for C in widths]
        branches = [(b, zs, fs, [bn_affine(zs[0].shape[1], zs[0] if batch else None)], bt, r)
                    for b, zs, fs, _, bt, r in branches]
    else:
        branches = _unit_branches(2, widths, 13, 10, fmt, batch, relus, bases)
    ys, yrs = branch_sums(branches), branch_sums_ref(branches)
    for y, yr in zip(ys, yrs):
        assert y.stride() == yr.contiguous(memory_format=fmt).stride()
        close(y, yr)
    leaves = _leaves(branches)
    gys = [torch.randn_like(y) for y in ys]
    for a, r in zip(torch.autograd.grad(ys, leaves, gys), torch.autograd.grad(yrs, leaves, gys)):
        close(a, r)


def test_branch_sums_many_terms_and_unused_outputs():
    """The outputs of two 4-branch units at once (8 sums: two forward launches; 24 terms: two
    backward chunks of 12) and a loss that reads only some outputs (the others' gradients are
    zero)."""
    torch.manual_seed(1)
    branches = [br for w in ((2, 3, 2, 3), (3, 2, 4, 2)) for br in
                _unit_branches(1, w, 17, 16, torch.channels_last, True, (True,) * 4, (True,) * 4)]
    ys, yrs = branch_sums(branches), branch_sums_ref(branches)
    leaves = _leaves(branches)
    kw = dict(allow_unused=True, materialize_grads=True)    # the unread outputs' leaves get zeros
    for a, r in zip(torch.autograd.grad(ys[0].sum() + ys[6].square().sum(), leaves, **kw),
                    torch.autograd.grad(yrs[0].sum() + yrs[6].square().sum(), leaves, **kw)):
        close(a, r)


def test_branch_sums_gradcheck_fp64():
    """Two branches, with and without a base, through the batch statistics (relu=False: the
    ReLU's kink is not differentiable)."""
    def fn(b, z0, z1, z2, w0, b0):
        a0 = bn_affine(2, z0, dtype=torch.float64)
        a2 = bn_affine(2, z2, dtype=torch.float64)
        return tuple(branch_sums([(b, [z0, z1], [2, 1], [Affine(w0, b0, a0.mean, a0.var, 1e-5), Affine(bias=b0)],
                                   [True, False], False),
                                  (None, [z2], [1], [Affine(b0, w0, a2.mean, a2.var, 1e-5)], [True], False)]))
    args = (rand(2, 2, 4, 6, dtype=torch.float64), rand(2, 2, 2, 3, dtype=torch.float64),
            rand(2, 2, 4, 6, dtype=torch.float64), rand(2, 2, 3, 2, dtype=torch.float64),
            rand(2, dtype=torch.float64), rand(2, dtype=torch.float64))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("dtype,mode", [(torch.bfloat16, Upsample.NEAREST), (torch.float16, Upsample.NEAREST),
                                        (torch.bfloat16, Upsample.BILINEAR)])
def test_branch_sum_low_precision_error_within_twice_eager(dtype, mode):
    b = rand(2, 8, 12, 10, dtype=dtype, grad=False)
    zs = [rand(2, 8, -(-12 // f), -(-10 // f), dtype=dtype, grad=False) for f in (1, 2, 4)]
    affs = [bn_affine(8, grad=False) for _ in zs]
    gold = branch_sum_ref(b.double(), [z.double() for z in zs], [1, 2, 4],
                          [Affine(*(t.double() for t in (a.weight, a.bias, a.mean, a.var)), a.eps) for a in affs],
                          [False] * 3, True, mode)
    assert_within_twice_eager([branch_sum(b, zs, [1, 2, 4], affs, [False] * 3, True, mode)],
                              [branch_sum_ref(b, zs, [1, 2, 4], affs, [False] * 3, True, mode)], [gold])


def test_branch_sum_gradcheck_fp64_through_batch_statistics():
    def fn(b, z0, z1, w0, b0):
        # relu=False: the ReLU's kink is not differentiable; the statistics are z's own
        a0 = bn_affine(2, z0, dtype=torch.float64)
        a0 = Affine(w0, b0, a0.mean, a0.var, 1e-5)
        a1 = Affine(bias=b0)
        return branch_sum(b, [z0, z1], [2, 1], [a0, a1], [True, False], False)
    args = (rand(2, 2, 4, 6, dtype=torch.float64), rand(2, 2, 2, 3, dtype=torch.float64),
            rand(2, 2, 4, 6, dtype=torch.float64), rand(2, dtype=torch.float64), rand(2, dtype=torch.float64))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_exchange_branch_matches_reference(fmt):
    """One output branch with every kind of segment and term: 1x1 convs of upsample paths at
    factors 2 and 4, the last strided 3x3 of a chain, the identity, a length-1 chain's output
    and a low-resolution conv output."""
    B, C, H, W = 2, 6, 12, 10
    mk = lambda *s: rand(*s, fmt=fmt, grad=False)  # noqa: E731
    segs = [Segment(mk(B, 5, 6, 5), [mk(C, 5, 1, 1)], 1, 2, [bn_affine(C, grad=False)]),
            Segment(mk(B, 7, 3, 3), [mk(C, 7, 1, 1)], 1, 4, [bn_affine(C, grad=False)]),
            Segment(mk(B, 4, 24, 20), [mk(C, 4, 3, 3)], 2, 1, [Affine(bias=mk(C))])]
    terms = [Term(mk(B, C, H, W)), Term(mk(B, C, H, W)), Term(mk(B, C, 6, 5), 2, bn_affine(C, grad=False))]
    with torch.no_grad():
        y, yr = exchange_branch(terms, segs, True), exchange_branch_ref(terms, segs, True)
    assert y.stride() == yr.contiguous(memory_format=fmt).stride()
    close(y, yr)
    # HRNetV2's form: the 1x1 convs at low resolution, their outputs resized bilinearly
    terms += [Term(mk(B, C, 3, 3), 4, bn_affine(C, grad=False), Upsample.BILINEAR)]
    terms[2].mode = Upsample.BILINEAR
    with torch.no_grad():
        close(exchange_branch(terms, segs[2:], True), exchange_branch_ref(terms, segs[2:], True))
    terms[2].mode = Upsample.BILINEAR_ALIGNED
    with pytest.raises(ValueError, match="the upsampled terms must share one mode"):
        exchange_branch(terms, segs[2:], True)


def test_bad_input_is_a_clear_error():
    x, w = rand(1, 3, 8, 8), rand(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"weights\[0\] must be \(C_g, Cin=2, k, k\)"):
        conv(x[:, :2], [w], 2)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        conv(x, [w], 3)
    with pytest.raises(ValueError, match="weights must hold 1 to 3"):
        conv(x, [w] * 4, 2)
    with pytest.raises(TypeError, match="x must be float32"):
        conv(x.detach().long(), [w], 2)
    b, z = rand(2, 3, 8, 8), rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"zs\[0\] must be \(B, C, ceil\(H/F\), ceil\(W/F\)\)"):
        branch_sum(b, [z[:, :2]], [2], [Affine()], [False], True)
    with pytest.raises(ValueError, match=r"affines\[0\].weight must be \(C,\)"):
        branch_sum(b, [z], [2], [Affine(rand(2), rand(3), rand(3), rand(3).abs(), 1e-5)], [False], True)
    with pytest.raises(ValueError, match=r"batch\[0\] needs a BatchNorm affine"):
        branch_sum(b, [z], [2], [Affine()], [True], True)
    with pytest.raises(ValueError, match="same length"):
        branch_sum(b, [z], [2], [], [False], True)
    with pytest.raises(ValueError, match="does not match"):
        bn_stats(torch.zeros(3, 4, device=DEV), torch.zeros(3, 4, device=DEV), 1000)
    with pytest.raises(ValueError, match=r"segments\[0\] .* does not cover the output"):
        exchange_branch([Term(b.detach())], [Segment(z.detach(), [rand(3, 3, 1, 1)], 1, 4)])


def _opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                                "test_aot_dispatch_dynamic"))


# the samples of every op: NHWC (what a channels_last model passes) and NCHW
@pytest.mark.parametrize("cl", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_opcheck_every_op(cl):
    """Schema, fake impl (strides included), autograd registration and AOT dispatch of each
    op on small samples, in both layouts."""
    x = rand(2, 4, 6, 5, fmt=cl)
    ws = [rand(3, 4, 3, 3), rand(2, 4, 3, 3)]
    x1, w1s = rand(2, 3, 4, 4, fmt=cl), [rand(5, 3, 1, 1)]     # a second conv: a 1x1 of its own input
    _opcheck(torch.ops.hrfast.convs.default, ([x, x1], ws + w1s, [2, 1], [2, 1], False, []))
    _opcheck(torch.ops.hrfast.convs.default, ([x.detach()], [w.detach() for w in ws], [2], [2], True, []))
    packed = [w.detach().to(torch.float64, memory_format=torch.channels_last) for w in ws]
    _opcheck(torch.ops.hrfast.pack_weights.default, ([w.detach() for w in ws], torch.float64))
    _opcheck(torch.ops.hrfast.convs.default, ([x.double()], [w.double() for w in ws], [2], [2], False, packed))
    gz = [rand(2, 3, 3, 3, fmt=cl, grad=False), rand(2, 2, 3, 3, fmt=cl, grad=False), rand(2, 5, 4, 4, fmt=cl,
                                                                                           grad=False)]
    _opcheck(torch.ops.hrfast.convs_backward.default,
             (gz, [x.detach(), x1.detach()], [w.detach() for w in ws + w1s], [2, 1], [2, 1], True))
    a = bn_affine(3, grad=False)
    _opcheck(torch.ops.hrfast.conv_bn_act.default,
             (x.detach(), [ws[0].detach()], 2, [a.weight], [a.bias], [a.mean], [a.var], [1e-5], [True]))
    z = rand(2, 3, 3, 3, fmt=cl, grad=False)
    pm, pm2 = bn_partials(z)
    _opcheck(torch.ops.hrfast.bn_partials.default, (z,))
    bn = torch.nn.BatchNorm2d(3).to(DEV)
    _opcheck(torch.ops.hrfast.bn_stats_many.default,
             ([pm, pm], [pm2, pm2], [18, 18], [bn.running_mean] * 2, [bn.running_var] * 2,
              [bn.num_batches_tracked] * 2, [3, 3], [1, 1], [0.1, 0.1], True))
    base, zz = rand(2, 3, 6, 4, fmt=cl), rand(2, 3, 3, 2, fmt=cl)
    a = bn_affine(3, zz)
    z2 = rand(2, 2, 6, 4, fmt=cl)
    a2 = bn_affine(2, z2)
    for mode in (Upsample.NEAREST, Upsample.BILINEAR):
        # two branches: a base and an upsampled term; no base and a term at full resolution
        lists = [[a.weight, a2.weight], [a.bias, a2.bias], [a.mean, a2.mean], [a.var, a2.var]]
        args = ([base, base.new_empty(0)], [zz, z2], [1, 1], [2, 1], *lists, [1e-5, 1e-5], [True, False],
                [True, False], int(mode))
        _opcheck(torch.ops.hrfast.branch_sums.default, args)
        ys = [y.detach() for y in torch.ops.hrfast.branch_sums(*args)]
        _opcheck(torch.ops.hrfast.branch_sums_backward.default,
                 ([torch.randn_like(y) for y in ys], ys, [zz.detach(), z2.detach()], [1, 1], [2, 1],
                  *[[t.detach() for t in lst] for lst in lists], [1e-5, 1e-5], [True, False], [True, False],
                  [True, False], int(mode)))
    w1 = rand(3, 4, 1, 1, grad=False)
    _opcheck(torch.ops.hrfast.exchange_branch.default,
             ([base.detach()], [1], *[[base.new_empty(0)]] * 4, [0.0], [rand(2, 4, 3, 2, fmt=cl, grad=False)],
              [w1], [1], [2], [a.weight.detach()], [a.bias.detach()], [a.mean], [a.var], [1e-5], True, 0))
    _opcheck(torch.ops.hrfast.exchange_branch.default,
             ([base.detach(), zz.detach()], [1, 2], *[[base.new_empty(0)] * 2] * 4, [0.0, 0.0], [], [], [], [], [], [],
              [], [], [], True, int(Upsample.BILINEAR)))
