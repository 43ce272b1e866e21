"""Fused Triton exchange units vs the reference path (Triton interpreter on CPU; CUDA when present).

Tolerances: fp32 atol/rtol 1e-5 on values of order 1. The kernel sums the same terms as the
reference in another order (base first), and train-mode BN statistics come from
``torch.var_mean`` instead of the BN kernel; each differs by a few float32 ulps. bf16/fp16 are
judged against eager's own error: err(fused) <= 2 * err(eager) + a small floor, both measured
against a float64 reference.
"""
import copy
import os

import pytest
import torch

from hrfast import HRNet
from hrfast.models.hrnet import HighResolutionModule
from hrfast.models.blocks import BasicBlock
from hrfast.ops.fused_sum import HAS_TRITON, fused_sum, fused_sum_ref, triton_runs_on

pytestmark = pytest.mark.skipif(
    not HAS_TRITON or not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()),
    reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 (make test sets it)")

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def make_terms(B, C, H, W, factors, dtype=torch.float32, seed=0, base=True):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(DEV, dtype)  # noqa: E731
    b = mk(B, C, H, W).requires_grad_() if base else None
    zs = [mk(B, C, -(-H // f), -(-W // f)).requires_grad_() for f in factors]
    ss = [mk(C).requires_grad_() for _ in factors]
    ts = [mk(C).requires_grad_() for _ in factors]
    return b, zs, ss, ts


def leaves(b, zs, ss, ts):
    return ([b] if b is not None else []) + zs + ss + ts


# (B, C, H, W, factors): minimal; odd sizes with factors 1, 2, 4; W32's stage-4 branch 0
# (32 channels, factors 2, 4, 8; small plane and batch 1 to keep the interpreter fast); no base
# (the BN+ReLU epilogue of a transition step).
SHAPES = [(1, 1, 2, 2, (2,)), (3, 5, 12, 9, (1, 2, 4)), (1, 32, 16, 8, (2, 4, 8)), (2, 4, 6, 6, (1,))]


@pytest.mark.parametrize("B,C,H,W,factors", SHAPES)
@pytest.mark.parametrize("relu", [True, False])
def test_fused_sum_forward_backward_fp32(B, C, H, W, factors, relu):
    b, zs, ss, ts = make_terms(B, C, H, W, factors, base=H != 6)
    y = fused_sum(b, zs, ss, ts, list(factors), relu)
    yr = fused_sum_ref(b, zs, ss, ts, list(factors), relu)
    torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-5)
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, leaves(b, zs, ss, ts), gy)
    ref = torch.autograd.grad(yr, leaves(b, zs, ss, ts), gy)
    for a, r in zip(got, ref):
        # per-channel sums over B*H*W values: scale the tolerance with their magnitude
        torch.testing.assert_close(a, r, atol=1e-5 * max(1.0, r.abs().max().item()), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_sum_low_precision_error_within_twice_eager(dtype):
    b, zs, ss, ts = make_terms(2, 8, 12, 10, (1, 2, 4), dtype=dtype)
    gold = fused_sum_ref(*[[t.double() for t in v] if isinstance(v, list) else v.double()
                           for v in (b, zs, ss, ts)], [1, 2, 4], True)
    err_fast = (fused_sum(b, zs, ss, ts, [1, 2, 4], True).double() - gold).abs().max()
    err_eager = (fused_sum_ref(b, zs, ss, ts, [1, 2, 4], True).double() - gold).abs().max()
    eps = torch.finfo(dtype).eps
    assert err_fast <= 2 * err_eager + 4 * eps, (err_fast, err_eager)


def test_fused_sum_gradcheck_fp64():
    b, zs, ss, ts = make_terms(1, 2, 4, 6, (1, 2), dtype=torch.float64)

    def fn(b, z0, z1, s0, s1, t0, t1):
        # ReLU's kink is not differentiable: keep the pre-activation away from 0
        return fused_sum(b, [z0, z1], [s0, s1], [t0, t1], [1, 2], False)
    assert torch.autograd.gradcheck(fn, (b, *zs, *ss, *ts), eps=1e-6, atol=1e-6)


def test_fused_sum_bad_input():
    b, zs, ss, ts = make_terms(2, 3, 8, 8, (2,))
    with pytest.raises(ValueError, match=r"zs\[0\] must be \(B, C, ceil\(H/F\), ceil\(W/F\)\)"):
        fused_sum(b, [zs[0][:, :2]], ss, ts, [2], True)
    with pytest.raises(ValueError, match=r"scales\[0\] and shifts\[0\] must be \(C,\)"):
        fused_sum(b, zs, [ss[0][:2]], ts, [2], True)
    with pytest.raises(TypeError, match="base must be float32/float16/bfloat16/float64"):
        fused_sum(b.detach().to(torch.int32), zs, ss, ts, [2], True)
    with pytest.raises(ValueError, match="same length"):
        fused_sum(b, zs, ss, [], [2], True)
    # non-contiguous inputs are handled (made contiguous), not misread
    nc = b.detach().transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(fused_sum(nc, zs, ss, ts, [2], True), fused_sum_ref(nc, zs, ss, ts, [2], True))


def hr_module(n_branches, multi=True, seed=0):
    torch.manual_seed(seed)
    ch = [4, 6, 8, 10][:n_branches]
    m = HighResolutionModule(BasicBlock, [1] * n_branches, list(ch), list(ch), multi_scale_output=multi)
    for mod in m.modules():                      # non-trivial BN state
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight)
    return m.to(DEV)


def set_fused(module, on):
    from hrfast.ops.exchange import FusedExchange
    from hrfast.models.exchange import ExchangeUnit
    for u in module.modules():
        if isinstance(u, ExchangeUnit):
            u._fused = FusedExchange() if on else None


@pytest.mark.parametrize("n_branches", [2, 3, 4])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("B,H,W", [(1, 16, 16), (3, 16, 24)])   # batch 1 and 3; H != W, odd low-res widths
def test_high_resolution_module_parity(n_branches, train, B, H, W):
    ref = hr_module(n_branches)
    fused = copy.deepcopy(ref)
    set_fused(fused, True)
    ref.train(train)
    fused.train(train)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(B, c, H // 2 ** j, W // 2 ** j, generator=g).to(DEV).requires_grad_()
          for j, c in enumerate([4, 6, 8, 10][:n_branches])]
    xf = [x.detach().clone().requires_grad_() for x in xs]
    out_r, out_f = ref(xs), fused(xf)
    for a, r in zip(out_f, out_r):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
    # BN running statistics updated identically (train mode)
    for (k, a), (_, r) in zip(fused.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5, msg=k)
    loss_r = sum((o * torch.linspace(-1, 1, o.numel(), device=DEV).view_as(o)).sum() for o in out_r)
    loss_f = sum((o * torch.linspace(-1, 1, o.numel(), device=DEV).view_as(o)).sum() for o in out_f)
    loss_r.backward()
    loss_f.backward()
    for a, r in zip(xf, xs):
        torch.testing.assert_close(a.grad, r.grad, atol=1e-4, rtol=1e-4)
    for (k, a), (_, r) in zip(fused.named_parameters(), ref.named_parameters()):
        # parameter grads are sums over B*H*W positions: tolerance relative to their size
        torch.testing.assert_close(a.grad, r.grad, atol=1e-4 * max(1.0, r.grad.abs().max().item()),
                                   rtol=1e-4, msg=k)


def test_mismatched_branches_are_a_clear_error():
    m = hr_module(2)
    set_fused(m, True)
    with pytest.raises(ValueError, match=r"ExchangeUnit branch 1: expected shape"):
        m.fuse_layers([torch.randn(1, 4, 8, 8, device=DEV), torch.randn(1, 6, 3, 4, device=DEV)])


def test_whole_small_hrnet_triton_equals_reference():
    torch.manual_seed(0)
    ref = HRNet.from_config("w18_small_128x96").to(DEV).eval()
    for mod in ref.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight)
    fused = copy.deepcopy(ref).set_backend("triton")
    assert fused.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(1, 3, 64, 64, device=DEV)
    with torch.no_grad():
        a, r = fused(x), ref(x)
    torch.testing.assert_close(a, r, atol=1e-4 * r.abs().max().item(), rtol=1e-4)


def test_auto_backend_uses_reference_on_cpu():
    m = HRNet.from_config("w18_small_128x96", backend="auto")
    assert all(u._fused is not None and not u._fused.applies([torch.zeros(1, 1, 2, 2)])
               for u in m.exchange_units())
    assert triton_runs_on(torch.device("cuda")) or not torch.cuda.is_available()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="torch.compile cannot trace wrap_triton kernels under TRITON_INTERPRET "
                           "(pytorch/pytorch#152868); runs on CUDA")
def test_fused_sum_traces_under_compile():
    b, zs, ss, ts = make_terms(1, 2, 4, 4, (2,))
    fn = torch.compile(lambda b, z, s, t: fused_sum(b, [z], [s], [t], [2], True), backend="aot_eager",
                       fullgraph=True)
    torch.testing.assert_close(fn(b, zs[0], ss[0], ts[0]), fused_sum_ref(b, zs, ss, ts, [2], True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real W32 shapes need a CUDA GPU (too slow in the interpreter)")
# fp32 2e-3: tl.dot runs fp32 convs in TF32 on the GPU, as cuDNN does by default
# (torch.backends.cudnn.allow_tf32); bf16 5e-2: a few bf16 ulps of the output scale
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("train", [True, False])
def test_w32_stage4_unit_on_cuda(dtype, tol, train):
    """W32 256x192 stage-4 exchange unit at batch 32 (64x48 ... 8x6), fused vs reference."""
    from hrfast.models.exchange import ExchangeUnit
    from hrfast.ops.exchange import FusedExchange
    torch.manual_seed(0)
    ch = [32, 64, 128, 256]
    ref = ExchangeUnit(ch, 4).cuda().to(dtype).train(train)
    fused = copy.deepcopy(ref)
    fused._fused = FusedExchange()
    xs = [torch.randn(32, c, 64 >> j, 48 >> j, device="cuda", dtype=dtype) for j, c in enumerate(ch)]
    for a, r in zip(fused(xs), ref(xs)):
        torch.testing.assert_close(a.float(), r.float(), atol=tol * r.float().abs().max().item(), rtol=tol)
