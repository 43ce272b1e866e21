"""hrfast::conv3x3_wgrad and hrfast::conv3x3 (csrc/conv3x3.cpp) against ATen: the weight
gradient's values against a float64 reference on shapes that reach every path of the kernel,
the op's autograd (input gradient from ATen, weight gradient from the kernel), opcheck,
torch.compile, the Conv3x3 module and its installation by optimize(mode="training").

Tolerance: bfloat16 results to 2x the error of ATen's bfloat16 weight gradient (oneDNN) against
float64 on the same bf16 inputs, plus one bf16 rounding of the largest value (2**-8 of it):
both accumulate in float and round once, but in different orders, so either may land one
rounding step from the other.
"""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrfast.ops.conv3x3 import (
    HAS_OP,
    Conv3x3,
    conv3x3_wgrad,
    conv3x3_wgrad_ref,
    eligible,
    install_conv3x3,
    wgrad_pays,
)

pytestmark = pytest.mark.skipif(not HAS_OP, reason="hrfast._C not built (or built before conv3x3)")
CL = torch.channels_last
NATIVE = HAS_OP and bool(torch.ops.hrfast.conv3x3_wgrad_native())

# (N, C, O, H, W): minimal; odd widths and channel counts (pair and channel tails: W18's 18);
# 5 channel blocks (split 3 + 2) and output blocks of every size; a real W32 branch-0 shape
# (the large schedule: rows in items, float partials) and branch-3 shape (the small schedule).
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 7, 5, 9), (2, 18, 18, 9, 7), (1, 80, 20, 6, 5), (2, 144, 13, 4, 4),
          (3, 48, 16, 5, 5), (2, 32, 32, 64, 48), (2, 256, 256, 8, 6)]


def _inputs(n, c, o, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).bfloat16().contiguous(memory_format=CL)
    dy = torch.randn(n, o, h, w, generator=g).bfloat16().contiguous(memory_format=CL)
    return dy, x


def _error(got, ref64):
    return (got.double() - ref64).abs().max().item()


def _bound(eager, ref64):
    """The module doc's tolerance: 2x eager's error plus one bf16 rounding of the largest value."""
    return 2 * _error(eager, ref64) + ref64.abs().max().item() * 2 ** -8


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_weight_gradient_values(shape):
    dy, x = _inputs(*shape)
    ref64 = conv3x3_wgrad_ref(dy.double(), x.double())
    got, eager = conv3x3_wgrad(dy, x), conv3x3_wgrad_ref(dy, x)
    assert got.shape == eager.shape and got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=CL)
    err = _error(got, ref64)
    assert err <= _bound(eager, ref64), f"error {err:.3g} against float64 (eager {_error(eager, ref64):.3g})"


def test_any_layout_and_one_thread():
    """NCHW inputs are made channels_last first; one thread gives the reference's values too
    (the large schedule then has one float partial instead of two)."""
    dy, x = _inputs(2, 32, 32, 64, 48)
    ref64 = conv3x3_wgrad_ref(dy.double(), x.double())
    bound = _bound(conv3x3_wgrad_ref(dy, x), ref64)
    assert _error(conv3x3_wgrad(dy.contiguous(), x.contiguous()), ref64) <= bound
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _error(conv3x3_wgrad(dy, x), ref64) <= bound
    finally:
        torch.set_num_threads(threads)


def test_same_result_twice():
    """Each tile and each partial has one fixed owner and the partials are summed in order."""
    for shape in ((2, 32, 32, 64, 48), (2, 64, 64, 8, 6)):
        dy, x = _inputs(*shape)
        assert torch.equal(conv3x3_wgrad(dy, x), conv3x3_wgrad(dy, x))


@pytest.mark.skipif(not NATIVE, reason="the CPU has no AVX512-BF16: the op falls back to ATen (tested above)")
def test_runs_natively_here():
    """On an AVX512-BF16 CPU the result is the kernel's, not ATen's (they round differently)."""
    dy, x = _inputs(2, 32, 32, 64, 48)
    assert not torch.equal(torch.ops.hrfast.conv3x3_wgrad(dy, x), conv3x3_wgrad_ref(dy, x))


def test_other_dtypes_take_the_reference_and_bad_arguments_are_named():
    dy, x = _inputs(1, 4, 5, 6, 7)
    assert torch.equal(conv3x3_wgrad(dy.float(), x.float()), conv3x3_wgrad_ref(dy.float(), x.float()))
    with pytest.raises(RuntimeError, match="conv3x3_wgrad: grad and x must be bfloat16"):
        torch.ops.hrfast.conv3x3_wgrad(dy.float(), x.float())
    with pytest.raises(RuntimeError, match=r"conv3x3_wgrad: grad must be \(N, O, H, W\)"):
        torch.ops.hrfast.conv3x3_wgrad(dy[:, :, :3], x)
    with pytest.raises(RuntimeError, match=r"conv3x3: weight must be \(O, C, 3, 3\)"):
        torch.ops.hrfast.conv3x3(x, torch.zeros(5, 3, 3, 3, dtype=torch.bfloat16))


def test_autograd_in_bf16():
    """The op's input gradient is ATen's (equal); its weight gradient meets the bound above."""
    dy, x = _inputs(2, 18, 20, 9, 7)
    w = (torch.randn(20, 18, 3, 3) / 10).bfloat16().contiguous(memory_format=CL)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
    ya, yb = torch.ops.hrfast.conv3x3(xa, wa), F.conv2d(xb, wb, padding=1)
    assert torch.equal(ya, yb)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(xa.grad, xb.grad)
    ref64 = conv3x3_wgrad_ref(dy.double(), x.double())
    assert _error(wa.grad, ref64) <= _bound(wb.grad, ref64)
    assert wa.grad.dtype == torch.bfloat16


def test_gradcheck_in_float64():
    """Float64 takes ATen's weight gradient inside the same C++ autograd: gradcheck checks the glue."""
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.ops.hrfast.conv3x3, (x, w))
    y = torch.ops.hrfast.conv3x3(x.detach(), w)               # the weight's gradient alone
    y.sum().backward()
    assert w.grad is not None


def _samples():
    for dtype in (torch.float32, torch.bfloat16):
        dy, x = _inputs(2, 5, 3, 4, 7)
        w = torch.randn(3, 5, 3, 3).to(dtype).contiguous(memory_format=CL)
        yield torch.ops.hrfast.conv3x3.default, (x.to(dtype).requires_grad_(), w.requires_grad_())
    yield torch.ops.hrfast.conv3x3_wgrad.default, _inputs(2, 5, 3, 4, 7)


def test_opcheck():
    for op, args in _samples():
        torch.library.opcheck(op, args)


def test_module_under_autocast_and_compile():
    """Conv3x3 under CPU bf16 autocast runs the op (eager and torch.compile(fullgraph=True)
    agree with F.conv2d's step); outside autocast it is nn.Conv2d."""
    torch.manual_seed(0)
    ref = nn.Conv2d(16, 16, 3, padding=1, bias=False).to(memory_format=CL)
    fast = copy.deepcopy(ref)
    assert install_conv3x3(fast) == 1 and type(fast) is Conv3x3
    x = torch.randn(2, 16, 12, 10).contiguous(memory_format=CL)
    assert torch.equal(fast(x), ref(x))
    outs = []
    for net in (ref, fast, torch.compile(copy.deepcopy(fast), fullgraph=True)):
        net.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            y = net(x)
        y.float().square().sum().backward()
        outs.append((y, next(net.parameters()).grad))
    (y0, g0), (y1, g1), (y2, g2) = outs
    assert torch.equal(y1, y0) and torch.equal(y2, y1)
    torch.testing.assert_close(g1, g0, rtol=2e-2, atol=2e-2 * g0.abs().max().item())
    torch.testing.assert_close(g2, g1, rtol=0, atol=0)


def test_install_on_a_model_and_in_optimize():
    """Every 3x3 stride-1 conv of the pose net (not the strided ones, not the 1x1) becomes
    Conv3x3 and back; the state_dict, deepcopy and pickle are unchanged; optimize(mode=
    "training") installs it exactly where wgrad_pays() holds."""
    from hrfast import HRNet, optimize
    model = HRNet.from_config("w18_small_128x96")
    keys = list(model.state_dict())
    expected = [n for n, m in model.named_modules() if eligible(m)]
    assert expected and all(m.stride == (1, 1) for n, m in model.named_modules() if n in expected)
    assert install_conv3x3(model) == len(expected)
    assert list(model.state_dict()) == keys
    assert {n for n, m in model.named_modules() if type(m) is Conv3x3} == set(expected)
    assert type(copy.deepcopy(model).stage2[0].branches[0][0].conv1) is Conv3x3
    assert type(pickle.loads(pickle.dumps(model)).stage2[0].branches[0][0].conv1) is Conv3x3
    install_conv3x3(model, enabled=False)
    assert not any(type(m) is Conv3x3 for m in model.modules())
    opt = optimize(copy.deepcopy(model), mode="training", compile=False, device="cpu", dtype="bf16")
    installed = any(type(m) is Conv3x3 for m in opt.modules())
    assert installed == wgrad_pays() and ("hrfast::conv3x3_wgrad" in opt.plan.report()) == wgrad_pays()
