"""hrfast::batch_stats / bn_act / bn_act_backward (csrc/bn_act.cpp) against eager BN + add +
ReLU: values and gradients against a float64 reference, running statistics, fallbacks,
opcheck, thread-count independence, and the hook in the model and in optimize(mode="training").

Tolerances: float32 against float64 is held to 2e-6 of each tensor's largest value (eager
float32 lands at 1e-7 to 2e-6 on these shapes); bfloat16 to 2x eager bfloat16's error, the
standard of every fast path. The cases keep pre-ReLU values away from 0
(tests/norm_cases.py).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
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

from hrfast.ops.bn_act import HAS_OP, applies, bn_act, bn_act_ref
from hrfast.ops.norm_act import install_norm_act

pytestmark = pytest.mark.skipif(not HAS_OP, reason="hrfast._C not built (or built before bn_act)")

# minimal (one channel, six rows), odd (channels and chunks that fill no vector or chunk), and a
# real W32 branch shape at batch 2
SHAPES = [(1, 1, 2, 3), (3, 5, 7, 3), (2, 17, 13, 11), (2, 32, 64, 48)]


def _errors(got, ref):
    return [((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(got, ref)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("residual,relu", [(False, True), (True, True), (True, False), (False, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_values_and_gradients(shape, residual, relu, dtype):
    bn = make_bn(shape[1])
    x, r, dy = make_inputs(shape, dtype, residual)
    ref = float64_reference(bn, x, r, dy, relu)
    got = _errors(run_norm(bn_act, copy.deepcopy(bn), x, r, dy, relu), ref)
    eager = _errors(run_norm(bn_act_ref, copy.deepcopy(bn), x, r, dy, relu), ref)
    for name, e, base in zip(["y", "dx", "dweight", "dbias", "dresidual"], got, eager):
        bound = 2e-6 if dtype == torch.float32 else 2 * base + 1e-6
        assert e <= bound, f"{name}: error {e:.2e} against float64 (eager {base:.2e})"


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics(momentum):
    assert_running_statistics(bn_act, bn_act_ref, momentum)


def test_same_result_on_any_thread_count():
    """Statistics are summed in fixed chunks in chunk order: one thread and two agree bit for bit."""
    x, r, dy = make_inputs((2, 32, 40, 24), torch.bfloat16, True)
    bn, threads = make_bn(32), torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(run_norm(bn_act, copy.deepcopy(bn), x, r, dy, True))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_fallbacks_are_the_reference():
    """Where the kernels do not apply (eval mode, NCHW, float64, a BN without running
    statistics, a residual of another dtype) bn_act is the eager twin."""
    bn = make_bn(4)
    x, r, _ = make_inputs((2, 4, 5, 3), torch.float32, True)
    assert applies(bn, x, r)
    cases = [(copy.deepcopy(bn).eval(), x, r), (bn, x.contiguous(), None),
             (copy.deepcopy(bn).double(), x.double(), None),
             (nn.BatchNorm2d(4, track_running_stats=False), x, None), (bn, x, r.bfloat16())]
    for b, xi, ri in cases:
        assert not applies(b, xi, ri)
        ref = copy.deepcopy(b)
        torch.testing.assert_close(bn_act(xi, b, ri), bn_act_ref(xi, ref, ri), rtol=0, atol=0)


def test_bad_arguments_name_the_argument():
    x, _, _ = make_inputs((2, 4, 3, 3), torch.float32, False)
    w = torch.ones(4)
    with pytest.raises(RuntimeError, match="bn_act: x must be a channels_last"):
        torch.ops.hrfast.bn_act(x.contiguous(), None, w, w, w, w, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"bn_act: weight must be a contiguous float32 \(4,\)"):
        torch.ops.hrfast.bn_act(x, None, torch.ones(3), w, w, w, 1e-5, True)
    with pytest.raises(RuntimeError, match="bn_act: residual must be"):
        torch.ops.hrfast.bn_act(x, x.bfloat16(), w, w, w, w, 1e-5, True)


def _samples():
    for dtype in (torch.float32, torch.bfloat16):
        x, r, dy = make_inputs((2, 5, 4, 3), dtype, True)
        w, b = torch.rand(5) + 0.5, torch.randn(5)
        mean, var = x.float().mean((0, 2, 3)), x.float().var((0, 2, 3), unbiased=False)
        for res, relu in ((r, True), (None, True), (r, False)):
            yield (torch.ops.hrfast.bn_act.default,
                   (x.requires_grad_(), None if res is None else res.requires_grad_(), w.requires_grad_(),
                    b.requires_grad_(), mean, var, 1e-5, relu))
        y = torch.ops.hrfast.bn_act(x.detach(), r.detach(), w.detach(), b.detach(), mean, var, 1e-5, True)
        for yy, res in ((y, True), (None, False)):
            yield torch.ops.hrfast.bn_act_backward.default, (dy.contiguous(memory_format=CL), x.detach(), yy,
                                                             w.detach(), b.detach(), mean, var, 1e-5, True, res)
        yield torch.ops.hrfast.batch_stats.default, (x.detach(), torch.zeros(5), torch.ones(5),
                                                     torch.zeros((), dtype=torch.long), 0.1)


def test_opcheck():
    for op, args in _samples():
        torch.library.opcheck(op, args)


def test_model_hook_and_optimize():
    """The hook covers the stem and every block; with it a training step's loss and BN
    statistics match the reference model's, and optimize(mode="training") installs it."""
    from hrfast import HRNet, optimize
    torch.manual_seed(0)
    model = HRNet.from_config("w18_small_128x96").train().to(memory_format=CL)
    fused = copy.deepcopy(model)
    n_blocks = sum(1 for m in model.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck"))
    assert install_norm_act(fused) == n_blocks + 1                       # the blocks and the stem
    x = torch.randn(2, 3, 128, 96).contiguous(memory_format=CL)
    a, b = model(x), fused(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    F.mse_loss(b, torch.zeros_like(b)).backward()
    assert all(p.grad is not None for p in fused.parameters())
    for ra, rb in zip(model.buffers(), fused.buffers()):
        torch.testing.assert_close(rb, ra, rtol=1e-4, atol=1e-5)
    opt = optimize(copy.deepcopy(model), mode="training", compile=False, device="cpu")
    assert "hrfast::bn_act" in opt.plan.report()
    assert all(m.norm_act_impl is not None for m in opt.modules() if hasattr(m, "norm_act_impl"))


def test_compiles_fullgraph_with_running_statistics():
    """A BasicBlock on the hook under torch.compile(fullgraph=True): the ops trace (batch_stats
    functionalized, bn_act's C++ autograd through AOT), the result and the gradients equal the
    eager block's, and the running statistics are updated once."""
    from hrfast.models.blocks import BasicBlock
    torch.manual_seed(0)
    block = BasicBlock(8, 8).train().to(memory_format=CL)
    install_norm_act(block)
    eager = copy.deepcopy(block)
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=CL)
    for a, b in zip(*block_step_outputs((torch.compile(block, fullgraph=True), eager), x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert int(block.bn1.num_batches_tracked) == 1


def test_family_trainers_layout():
    """The family's trainers (cls, face, seg) train on the CPU in channels_last with the hook
    in every block and stem; for another device the net is left as it is."""
    from hrfast.engine.epochs import cpu_training_layout
    from hrfast.models import build_model
    from hrfast.tasks import read_task_yaml
    net = build_model(read_task_yaml("face_hrnetv2_w18_small_300w_128"))
    same = cpu_training_layout(net, "meta")
    assert same is net and all(m.norm_act_impl is None for m in net.modules() if hasattr(m, "norm_act_impl"))
    net = cpu_training_layout(net, "cpu")
    hooked = [m for m in net.modules() if hasattr(m, "norm_act_impl")]
    assert hooked and all(m.norm_act_impl is not None for m in hooked)
    assert all(p.is_contiguous(memory_format=CL) for p in net.parameters() if p.dim() == 4)
