"""Implicit-GEMM Triton 3x3 conv with fused epilogue vs F.conv2d (Triton interpreter on CPU).

fp32 tolerances: 1e-5 relative to the output scale. The kernel sums Cin*9 products in blocks
of 32, oneDNN in another order; the difference is a few ulps of the largest partial sum.
"""
import os

import pytest
import torch

from hrfast.ops.conv import conv3x3, conv3x3_ref
from hrfast.ops.fused_sum import HAS_TRITON

pytestmark = pytest.mark.skipif(
    not HAS_TRITON or not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()),
    reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 (make test sets it)")
DEV = "cuda" if torch.cuda.is_available() else "cpu"

# (B, Cin, H, W, Cout, stride): minimal; odd sizes; a W32 stage-2 -> stage-3 downsample step
# (64 channels at 16x12, batch 1, to keep the interpreter fast); stride 1 (a transition).
SHAPES = [(1, 1, 2, 2, 1, 2), (2, 5, 7, 9, 6, 2), (1, 64, 16, 12, 32, 2), (2, 3, 6, 5, 4, 1)]


def inputs(B, Cin, H, W, Cout, stride, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(DEV, dtype).requires_grad_()  # noqa: E731
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    return mk(B, Cin, H, W), mk(Cout, Cin, 3, 3), mk(Cout), mk(Cout), mk(B, Cout, Ho, Wo)


@pytest.mark.parametrize("B,Cin,H,W,Cout,stride", SHAPES)
@pytest.mark.parametrize("epilogue", ["none", "affine_relu", "affine_add_relu", "add"])
def test_forward_backward_fp32(B, Cin, H, W, Cout, stride, epilogue):
    x, w, s, t, a = inputs(B, Cin, H, W, Cout, stride)
    kw = {"none": {}, "affine_relu": dict(scale=s, shift=t, relu=True),
          "affine_add_relu": dict(scale=s, shift=t, add=a, relu=True), "add": dict(add=a)}[epilogue]
    y = conv3x3(x, w, stride, **kw)
    yr = conv3x3_ref(x, w, stride, **kw)
    scale = max(1.0, yr.abs().max().item())
    torch.testing.assert_close(y, yr, atol=1e-5 * scale, rtol=1e-5)
    leaves = [x, w] + [v for k, v in (("scale", s), ("shift", t), ("add", a)) if k in kw]
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, leaves, gy)
    ref = torch.autograd.grad(yr, leaves, gy)
    for u, v in zip(got, ref):
        torch.testing.assert_close(u, v, atol=1e-5 * max(1.0, v.abs().max().item()), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_within_twice_eager(dtype):
    x, w, s, t, a = inputs(2, 16, 8, 8, 8, 2, dtype=dtype)
    gold = conv3x3_ref(x.double(), w.double(), 2, s.double(), t.double(), a.double(), True)
    err_fast = (conv3x3(x, w, 2, s, t, a, True).double() - gold).abs().max()
    err_eager = (conv3x3_ref(x, w, 2, s, t, a, True).double() - gold).abs().max()
    assert err_fast <= 2 * err_eager + 4 * torch.finfo(dtype).eps * gold.abs().max(), (err_fast, err_eager)


def test_gradcheck_fp64():
    x, w, s, t, a = inputs(1, 2, 5, 4, 3, 2, dtype=torch.float64)
    fn = lambda x, w, s, t, a: conv3x3(x, w, 2, s, t, a, False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, s, t, a), eps=1e-6, atol=1e-6)


def test_bad_input():
    x, w, s, t, a = inputs(1, 3, 8, 8, 4, 2)
    with pytest.raises(ValueError, match=r"weight must be \(Cout, Cin, 3, 3\) with Cin=3"):
        conv3x3(x, w[:, :2], 2)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        conv3x3(x, w, 3)
    with pytest.raises(ValueError, match=r"add must be \(B, Cout, Ho, Wo\)"):
        conv3x3(x, w, 1, add=a)
    with pytest.raises(ValueError, match="scale and shift must be given together"):
        conv3x3(x, w, 2, scale=s)
    with pytest.raises(TypeError, match="x must be float32"):
        conv3x3(x.detach().long(), w, 2)
    nc = x.detach().transpose(2, 3).contiguous().transpose(2, 3)        # non-contiguous: handled
    torch.testing.assert_close(conv3x3(nc, w, 2), conv3x3_ref(nc, w, 2), atol=1e-5, rtol=1e-5)


def test_cudnn_conv_with_triton_epilogue_path_matches():
    """The other dispatch choice (cuDNN/oneDNN conv + Triton epilogue) gives the same unit."""
    import copy
    from hrfast.models.exchange import ExchangeUnit
    from hrfast.ops.exchange import FusedExchange
    torch.manual_seed(0)
    unit = ExchangeUnit([4, 6, 8], 3).to(DEV).eval()
    xs = [torch.randn(2, c, 16 >> j, 12 >> j, device=DEV) for j, c in enumerate([4, 6, 8])]
    ref = unit(xs)
    for triton_conv in (True, False):
        u = copy.deepcopy(unit)
        u._fused = FusedExchange(triton_conv=triton_conv)
        for a, r in zip(u(xs), ref):
            torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
