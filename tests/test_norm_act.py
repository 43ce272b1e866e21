"""hrfast.ops.norm_act (BN + residual + ReLU on the Triton ops: bn_partials, bn_stats,
branch_sum) against eager BN + add + ReLU: values and gradients against a float64 reference,
running statistics, float64 gradcheck, fallbacks, the hook in a block (compiled fullgraph too)
and in optimize's plan. On CUDA when there is a GPU, else in Triton's CPU interpreter.

Tolerances: float32 against float64 is held to 2e-6 of each tensor's largest value (eager
float32 lands at 1e-7 to 2e-6); bfloat16 and float16 to 2x eager's error in the same dtype,
the standard of every fast path. The cases keep pre-ReLU values away from 0
(tests/norm_cases.py).
"""
import copy
import os

import pytest
import torch
from norm_cases import (
    CL,
    assert_running_statistics,
    block_step_outputs,
    float64_reference,
    make_bn,
    make_inputs,
    run_norm,
)
from torch import nn

from hrfast.kernels.launch import HAS_TRITON
from hrfast.ops.bn_act import bn_act_ref
from hrfast.ops.norm_act import TritonNormAct, applies, install_norm_act, norm_act, norm_act_for

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(
    not HAS_TRITON or not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()),
    reason="the Triton ops need a GPU or TRITON_INTERPRET=1")

# minimal (one channel), odd (sizes that fill no tile), and a W32 branch at batch 2 (on the GPU
# only: the interpreter takes minutes on it)
SHAPES = [(1, 1, 2, 3), (3, 5, 7, 3), (2, 17, 13, 11)] + ([(2, 32, 64, 48)] if DEV.type == "cuda" else [])


def _bn(c: int, momentum=0.1, dtype=torch.float32) -> nn.BatchNorm2d:
    return make_bn(c, momentum, DEV, dtype)


def _inputs(shape, dtype, residual: bool, fmt=CL):
    return make_inputs(shape, dtype, residual, DEV, fmt)


def _errors(got, ref, x, dy):
    """Each tensor's max error against the float64 ``ref``, relative to its largest value; the
    weight's gradient relative to its largest sum of |dy * x_hat| instead: it is a sum of terms
    of both signs (x_hat has zero mean), which cancel by chance at small shapes (76x at 6
    values), and rounding is proportional to the terms, not to what is left of them."""
    x, dy = x.double(), dy.double()
    x_hat = (x - x.mean((0, 2, 3), keepdim=True)) / x.var((0, 2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt()
    scales = [b.abs().max() for b in ref]
    scales[2] = (dy.abs() * x_hat.abs()).sum((0, 2, 3)).max()
    return [((a.double() - b).abs().max() / s.clamp_min(1e-30)).item() for a, b, s in zip(got, ref, scales)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("residual,relu", [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_values_and_gradients(shape, residual, relu, dtype, fmt, tf32_off):
    bn = _bn(shape[1])
    x, r, dy = _inputs(shape, dtype, residual, fmt)
    assert applies(bn, x, r)
    ref = float64_reference(bn, x, r, dy, relu)
    got = run_norm(norm_act, copy.deepcopy(bn), x, r, dy, relu)
    assert got[0].dtype == dtype and got[0].stride() == x.stride()
    eager = _errors(run_norm(bn_act_ref, copy.deepcopy(bn), x, r, dy, relu), ref, x, dy)
    for name, e, base in zip(["y", "dx", "dweight", "dbias", "dresidual"], _errors(got, ref, x, dy), eager):
        bound = 2e-6 if dtype == torch.float32 else 2 * base + 1e-6
        assert e <= bound, f"{name}: error {e:.2e} against float64 (eager {base:.2e})"


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics(momentum):
    assert_running_statistics(norm_act, bn_act_ref, momentum, DEV)


def test_gradcheck_fp64():
    bn = _bn(3, dtype=torch.float64)
    x, r, _ = _inputs((2, 3, 4, 3), torch.float64, True)

    args = (x.requires_grad_(), r.requires_grad_(), bn.weight.detach().clone().requires_grad_(),
            bn.bias.detach().clone().requires_grad_())
    del bn.weight, bn.bias     # plain tensors in their place: gradcheck's own reach the BN
    bn.weight, bn.bias = args[2], args[3]
    assert applies(bn, x, r)

    def fn(x, r, w, b):
        bn.weight, bn.bias = w, b
        return norm_act(x, bn, r, True)
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, fast_mode=True)


def test_three_launches_each_way():
    """Forward: the partials, the statistics (running ones updated in the kernel) and the
    normalize + add + ReLU; backward: the BN backward's reduce, its row sums and its apply, with
    the ReLU mask and the residual's gradient inside."""
    from hrfast.kernels.launch import count_launches
    bn = _bn(5)
    x, r, dy = _inputs((2, 5, 4, 3), torch.float32, True)
    x.requires_grad_()
    with count_launches() as fwd:
        y = norm_act(x, bn, r.requires_grad_(), True)
    with count_launches() as bwd:
        y.backward(dy)
    assert (fwd.n, bwd.n) == (3, 3)


def test_fallbacks_are_eager():
    """Where the ops do not apply (eval mode, a BN without running statistics or affine, a
    residual of another dtype or shape) norm_act is eager BN + add + ReLU."""
    bn = _bn(4)
    x, r, _ = _inputs((2, 4, 5, 3), torch.float32, True)
    cases = [(copy.deepcopy(bn).eval(), x, r), (nn.BatchNorm2d(4, track_running_stats=False).to(DEV), x, None),
             (nn.BatchNorm2d(4, affine=False).to(DEV), x, None), (bn, x, r.half()), (bn, x, r[:1])]
    for b, xi, ri in cases:
        assert not applies(b, xi, ri)
        if ri is None or ri.shape == xi.shape:
            torch.testing.assert_close(norm_act(xi, b, ri), bn_act_ref(xi, copy.deepcopy(b), ri), rtol=0, atol=0)


def test_block_hook_compiles_fullgraph():
    """A BasicBlock with the hook (both BNs, one with the residual), eager and under
    torch.compile(fullgraph=True), against the block without it: output, gradients and
    running statistics (updated once a step)."""
    from hrfast.models.blocks import BasicBlock
    torch.manual_seed(0)
    plain = BasicBlock(8, 8).train().to(DEV, memory_format=CL)
    fused = copy.deepcopy(plain)
    assert install_norm_act(fused, impl=TritonNormAct()) == 1
    x = torch.randn(2, 8, 6, 5, device=DEV).contiguous(memory_format=CL)
    for a, b in zip(*block_step_outputs((torch.compile(fused, fullgraph=True), plain), x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert int(fused.bn1.num_batches_tracked) == 1


def test_model_training_step_matches_eager(tf32_off):
    """The hook in the whole net (the stem's two BNs, the Bottlenecks' and the BasicBlocks'):
    one fp32 training step gives eager's loss, gradients and running statistics. W32 at its
    input size on the GPU; the smallest config at 32x32 in the interpreter (about 5 s)."""
    import torch.nn.functional as F

    from hrfast import HRNet
    torch.manual_seed(0)
    cuda = DEV.type == "cuda"
    model = HRNet.from_config("w32_256x192" if cuda else "w18_small_128x96").train().to(DEV)
    fused = copy.deepcopy(model)
    n_blocks = sum(1 for m in model.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck"))
    assert install_norm_act(fused, impl=TritonNormAct()) == n_blocks + 1
    x = torch.randn(2, 3, *((256, 192) if cuda else (32, 32)), device=DEV)
    for net in (model, fused):
        out = net(x)
        F.mse_loss(out, torch.zeros_like(out)).backward()
    # float32 sums in another order through about 60 layers: 2.3e-5 of the largest gradient
    # of a parameter at most in the interpreter; a wrong residual or statistic is off by O(1)
    for (name, p), q in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=2e-4 * float(p.grad.abs().max()), msg=name)
    for (name, a), b in zip(model.named_buffers(), fused.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_installed_by_device():
    """install_norm_act picks the native op on the CPU and this one on CUDA; optimize(mode=
    "training") installs it on CUDA and says so in its plan."""
    from hrfast.ops.bn_act import HAS_OP, NormAct
    assert isinstance(norm_act_for(torch.device("cpu")), NormAct) or not HAS_OP
    if DEV.type != "cuda":
        return
    from hrfast import HRNet, optimize
    assert isinstance(norm_act_for(DEV), TritonNormAct)
    opt = optimize(HRNet.from_config("w18_small_128x96"), mode="training", compile=False, device=DEV)
    assert "Triton: bn_partials, bn_stats, branch_sum" in opt.plan.report()
    assert all(isinstance(m.norm_act_impl, TritonNormAct) for m in opt.modules() if hasattr(m, "norm_act_impl"))
