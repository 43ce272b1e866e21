"""Fused exchange units (``hrfast.ops.exchange``) against the reference path, whole units and a
whole small HRNet (Triton interpreter on the CPU; CUDA when present).

Tolerances. fp32 outputs: 1e-5 relative to their scale (the kernels sum in another order than
oneDNN/cuDNN). Gradients: 1e-4 of their own largest value. They pass through several convs
and BN backwards, each a few ulps apart, and parameter gradients sum over B*H*W positions.
BN running statistics: 1e-5 (1e-12 in float64). bf16: the fused unit's error is at most twice
eager's, both against a float64 run of the reference. On CUDA, TF32 is off in both paths.
"""
import copy
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_twice_eager

import hrfast.ops.exchange as exchange_ops
from hrfast import HRNet
from hrfast.kernels.launch import HAS_TRITON, count_launches
from hrfast.models.blocks import BasicBlock
from hrfast.models.exchange import ExchangeUnit
from hrfast.models.hrnet import HighResolutionModule
from hrfast.ops.exchange import FusedExchange, unit_supported

pytestmark = [pytest.mark.usefixtures("tf32_off"), pytest.mark.skipif(
    not HAS_TRITON or not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()),
    reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 (make test sets it)")]

DEV = "cuda" if torch.cuda.is_available() else "cpu"
CHANNELS = [4, 6, 8, 10]


def randomize(module):
    """Non-trivial BN state and weights, so that every term matters."""
    for mod in module.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight)
    return module


def hr_module(n_branches, dtype=torch.float32, upsample="nearest", align_corners=False):
    torch.manual_seed(0)
    ch = CHANNELS[:n_branches]
    return randomize(HighResolutionModule(BasicBlock, [1] * n_branches, ch, ch, upsample=upsample,
                                          align_corners=align_corners)).to(DEV, dtype)


def set_fused(module, impl):
    for u in module.modules():
        if isinstance(u, ExchangeUnit):
            u.fused_impl = impl
    return module


def inputs(n, B, H, W, fmt, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(B, c, H >> j, W >> j, generator=g, dtype=torch.float64).to(DEV, dtype)
          for j, c in enumerate(CHANNELS[:n])]
    return [x.contiguous(memory_format=fmt).requires_grad_() for x in xs]


def weighted_loss(outs):
    return sum((o.float() * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum() for o in outs)


def close(a, r, tol):
    torch.testing.assert_close(a, r, atol=tol * max(1.0, r.abs().max().item()), rtol=tol)


def check_module_parity(n, mode, B, H, W, fmt, impl=None, dtype=torch.float32, upsample="nearest",
                        align_corners=False):
    """Outputs, BN running statistics and the gradients of inputs and of every parameter.
    mode: 'train' (batch statistics), 'eval' (inference plan, no gradient) or 'frozen'
    (eval-mode BN with gradients, as when fine-tuning with frozen statistics). ``upsample``:
    the unit's ("bilinear": HRNetV2's, with ``align_corners``)."""
    ref = hr_module(n, dtype, upsample, align_corners).train(mode == "train")
    fused = set_fused(copy.deepcopy(ref), impl or FusedExchange())
    xs = inputs(n, B, H, W, fmt, dtype)
    xf = [x.detach().clone().requires_grad_() for x in xs]
    with torch.set_grad_enabled(mode != "eval"):
        out_r, out_f = ref(xs), fused(xf)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, r in zip(out_f, out_r):
        assert a.stride() == r.contiguous(memory_format=fmt).stride()   # the inputs' layout, no copies
        close(a, r, tol)
    for (k, a), (_, r) in zip(fused.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, r, atol=tol, rtol=tol, msg=k)
    if mode == "eval":
        return
    weighted_loss(out_r).backward()
    weighted_loss(out_f).backward()
    gtol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, r in zip(xf, xs):
        close(a.grad, r.grad, gtol)
    for (k, a), (_, r) in zip(fused.named_parameters(), ref.named_parameters()):
        assert a.grad is not None, k
        close(a.grad, r.grad, gtol)


CL, NCHW = torch.channels_last, torch.contiguous_format


# (branches, mode, batch, H, W, layout): every branch count in train and eval; batch 1 and 3;
# H != W and odd low-resolution widths (24 -> 3 at branch 3); both layouts; frozen BN once.
# The 4-branch training cases are the slowest in the interpreter, so there are two.
CASES = [(2, "train", 1, 16, 24, NCHW), (2, "eval", 3, 16, 24, CL), (3, "train", 3, 16, 24, CL),
         (3, "eval", 1, 16, 24, NCHW), (4, "train", 1, 16, 24, CL), (4, "train", 3, 16, 8, NCHW),
         (4, "eval", 3, 16, 24, CL), (4, "eval", 1, 16, 24, NCHW), (3, "frozen", 1, 16, 24, CL)]


@pytest.mark.parametrize("n,mode,B,H,W,fmt", CASES)
def test_high_resolution_module_parity(n, mode, B, H, W, fmt):
    check_module_parity(n, mode, B, H, W, fmt)


# HRNetV2's bilinear units (the face and segmentation nets): train and eval, both corner rules,
# both layouts; H and W that leave odd low-resolution sizes (20 x 12 -> 5 x 3 at branch 2), where
# the bilinear source rows are not a whole number of pixels apart.
BILINEAR_CASES = [(3, "train", 2, 20, 12, CL, False), (3, "eval", 1, 20, 12, NCHW, False),
                  (4, "train", 1, 16, 24, NCHW, True), (4, "eval", 2, 16, 24, CL, True),
                  (2, "frozen", 1, 16, 24, CL, False)]


@pytest.mark.parametrize("n,mode,B,H,W,fmt,align_corners", BILINEAR_CASES)
def test_bilinear_unit_parity(n, mode, B, H, W, fmt, align_corners):
    check_module_parity(n, mode, B, H, W, fmt, upsample="bilinear", align_corners=align_corners)


def test_bilinear_units_keep_their_launch_count():
    """The bilinear inference plan: every upsample path's 1x1 conv at low resolution (one
    merged GEMM per source), the resize inside the output branch's kernel (4 taps)."""
    unit = randomize(ExchangeUnit(CHANNELS, 4, "bilinear")).to(DEV).eval()
    unit.fused_impl = FusedExchange()
    xs = [x.detach() for x in inputs(4, 1, 16, 24, CL)]
    with torch.no_grad(), count_launches() as launches:
        unit(xs)
    # 3 merged first convs + 1 middle chain step + 3 low-resolution 1x1 convs (sources 1, 2, 3)
    # + 4 output branches
    assert launches.n == 11


@pytest.mark.parametrize("upsample", ["in_kernel", "low_res"])
def test_inference_upsample_variants(upsample):
    """Both ways of the upsample paths' 1x1 convs: inside the branch kernel at the output
    resolution, or at low resolution first."""
    check_module_parity(4, "eval", 2, 16, 24, CL, FusedExchange(upsample=upsample))


def test_cudnn_conv_variant():
    """The other dispatch choice: cuDNN/oneDNN convs with the Triton BN and sum kernels."""
    check_module_parity(3, "train", 2, 16, 24, CL, FusedExchange(conv="cudnn"))


def test_per_shape_dispatch_table(monkeypatch):
    """A merged conv listed in ``cudnn_convs`` runs on cuDNN/oneDNN, in both plans, with the
    same results: the first convs leaving branch 0 (3x3, stride 2, 4 -> 6 + 4 [+ 4] channels)
    and the low-resolution 1x1 convs of the lowest branch."""
    unit = randomize(ExchangeUnit(CHANNELS, 4)).to(DEV).eval()
    xs = [x.detach() for x in inputs(4, 1, 16, 24, CL)]
    convs = []
    conv2d = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: convs.append(a[1].shape) or conv2d(*a, **k))
    counts = []
    for table in (set(), {(3, 2, 4, 14), (1, 1, 10, 10)}):
        unit.fused_impl = FusedExchange(cudnn_convs=table)
        with torch.no_grad(), count_launches() as launches:
            unit(xs)
        counts.append(launches.n)
    # each listed GEMM becomes a cuDNN conv and one launch of its BN(+ReLU) passes
    assert counts[1] == counts[0] and sorted(c[:2] for c in convs) == [(10, 10), (14, 4)]
    check_module_parity(4, "eval", 1, 16, 24, CL, FusedExchange(cudnn_convs={(3, 2, 4, 14), (1, 1, 10, 10)}))
    check_module_parity(3, "train", 1, 16, 24, NCHW, FusedExchange(cudnn_convs={(3, 2, 4, 10), (1, 1, 8, 10)}))


def test_float64_statistics():
    """float64 units keep float64 BN statistics: parity to 1e-12, running statistics included."""
    check_module_parity(2, "train", 2, 8, 12, CL, dtype=torch.float64)


def test_fused_forward_and_twin_share_a_signature():
    from hrfast.ops.exchange import exchange_unit, exchange_unit_ref
    unit = randomize(ExchangeUnit(CHANNELS[:3], 2)).to(DEV).eval()
    xs = [x.detach() for x in inputs(3, 1, 8, 12, CL)]
    with torch.no_grad():
        for a, r in zip(exchange_unit(unit, xs), exchange_unit_ref(unit, xs)):
            close(a, r, 1e-5)


@pytest.mark.parametrize("dtype,upsample", [(torch.bfloat16, "nearest"), (torch.float16, "nearest"),
                                            (torch.bfloat16, "bilinear")])
def test_low_precision_unit_error_within_twice_eager(dtype, upsample):
    """bf16/fp16 training-mode forward: the fused unit's error against a float64 reference is
    at most twice eager's in the same dtype."""
    ref = hr_module(3, upsample=upsample).train()
    xs = inputs(3, 2, 16, 24, CL)
    gold = copy.deepcopy(ref).double()(
        [x.detach().double().contiguous(memory_format=CL) for x in xs])
    eager = copy.deepcopy(ref).to(dtype)
    fused = set_fused(copy.deepcopy(ref).to(dtype), FusedExchange())
    xb = [x.detach().to(dtype) for x in xs]
    with torch.no_grad():
        out_e, out_f = eager(xb), fused(xb)
    assert_within_twice_eager(out_f, out_e, gold)


def test_autocast_unit_reads_packed_weights(monkeypatch):
    """Under autocast a unit gets bf16 inputs and keeps float32 parameters: its conv weights are
    packed once (one call, one launch), the outputs are within twice eager autocast's error of
    a float64 run, and the parameters get float32 gradients within twice eager's error too."""
    torch.manual_seed(0)
    ref = randomize(ExchangeUnit(CHANNELS[:3], 3)).to(DEV).train()
    fused = copy.deepcopy(ref)
    fused.fused_impl = FusedExchange()
    gold_m = copy.deepcopy(ref).double()
    xs = [x.detach() for x in inputs(3, 2, 16, 24, CL)]
    gold = gold_m([x.double().contiguous(memory_format=CL) for x in xs])
    xb = [x.bfloat16() for x in xs]
    with torch.autocast(DEV, dtype=torch.bfloat16):
        out_e = ref(xb)
    packs = []
    pack = exchange_ops.pack_weights
    monkeypatch.setattr(exchange_ops, "pack_weights", lambda ws, dt: packs.append(len(ws)) or pack(ws, dt))
    out_f = fused(xb)
    assert packs == [sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules())]
    assert all(o.dtype == torch.bfloat16 for o in out_f)
    assert_within_twice_eager(out_f, out_e, gold)

    def grads(m, outs):
        return torch.autograd.grad(weighted_loss(outs), [p for p in m.parameters()])
    g_f, g_e, g_gold = grads(fused, out_f), grads(ref, out_e), grads(gold_m, gold)
    assert all(g.dtype == torch.float32 for g in g_f)
    assert_within_twice_eager(g_f, g_e, g_gold, "unit parameter gradients")


def test_launches_per_unit():
    """The fused stage-4 unit runs in a handful of launches (eager needs about 58 forward): the
    inference plan writes each output once."""
    unit = randomize(ExchangeUnit(CHANNELS, 4)).to(DEV).eval()
    unit.fused_impl = FusedExchange()
    xs = [x.detach() for x in inputs(4, 1, 16, 24, CL)]
    with torch.no_grad(), count_launches() as launches:
        unit(xs)
    # 3 merged first convs + 1 middle chain step + 2 low-resolution 1x1 convs (F 4, 8)
    # + 4 output branches
    assert launches.n == 10


def test_training_launches_per_unit():
    """A training step of the stage-4 unit: 10 launches forward (3 for the convs, one per level:
    the 6 that read the inputs, then 3, then 1; 4 BN finalisations: two for the first level's
    6 convs, one for each further level; 2 chain-step BN + ReLU launches, one per level; 1 for
    the sums of all 4 output branches) and 13 backward (3 for all the terms of the 4 output
    branches, their ReLU masks inside; 3 for each of the 2 chain levels; per conv level one
    launch for all its convs' dgrad and wgrad, and one sum of their split-K partials where the
    level has any): 23, against 62 with a launch per conv, per branch sum and per backward,
    and 106 before the multi-term kernels."""
    unit = randomize(ExchangeUnit(CHANNELS, 4)).to(DEV).train()
    unit.fused_impl = FusedExchange()
    xs = inputs(4, 2, 16, 24, CL)
    with count_launches() as forward:
        outs = unit(xs)
    with count_launches() as backward:
        weighted_loss(outs).backward()
    # wgrad's split-K sums depend on the device (the interpreter splits small problems too)
    assert forward.n == 10 and (backward.n == 13 if DEV == "cpu" else backward.n <= 15)


def test_whole_small_hrnet_triton_equals_reference():
    torch.manual_seed(0)
    ref = randomize(HRNet.from_config("w18_small_128x96")).to(DEV).eval()
    fused = copy.deepcopy(ref).set_backend("triton")
    assert fused.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(1, 3, 64, 64, device=DEV).contiguous(memory_format=CL)
    ref, fused = ref.to(memory_format=CL), fused.to(memory_format=CL)
    with torch.no_grad():
        a, r = fused(x), ref(x)
    close(a, r, 1e-4)


# A whole HRNet (stem, 4 stages, transitions, 4-branch units) with few channels, for the
# interpreter.
TINY_SPEC = {"num_joints": 5, "stem_channels": 16,
             "stage1": {"num_modules": 1, "block": "BOTTLENECK", "num_blocks": [1], "num_channels": [8]},
             "stages": [{"num_modules": 1, "block": "BASIC", "num_blocks": [1] * n,
                         "num_channels": [4, 8, 16, 32][:n]} for n in (2, 3, 4)]}


def test_whole_small_hrnet_training_step():
    """One train-mode step of a channels_last small HRNet: loss, every parameter's gradient
    and the BN running statistics equal the reference's. The input is large enough that the
    lowest branch normalizes over 8 values per channel: with w18_small at 64x32 (4 values),
    a 1e-6 change of the input moved the reference loss by 8e-5, an ill-conditioned check."""
    torch.manual_seed(0)
    ref = randomize(HRNet(TINY_SPEC)).to(DEV, memory_format=CL).train()
    fused = copy.deepcopy(ref).set_backend("triton")
    x = torch.randn(2, 3, 64, 64, device=DEV).contiguous(memory_format=CL)
    la, lr = weighted_loss([fused(x)]), weighted_loss([ref(x)])
    close(la, lr, 1e-4)
    la.backward()
    lr.backward()
    for (k, a), (_, r) in zip(fused.named_parameters(), ref.named_parameters()):
        close(a.grad, r.grad, 1e-3)
    for (k, a), (_, r) in zip(fused.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.parametrize("packed", [False, True], ids=["fp32", "bf16-inputs-packed-weights"])
def test_compiles_fullgraph(packed):
    """The fused unit traces as one graph (custom ops with fake impls), forward and backward;
    also with bf16 inputs and float32 parameters (autocast's case: the weights packed in the
    graph), where the compiled unit equals the eager fused one."""
    unit = randomize(ExchangeUnit(CHANNELS[:3], 3)).to(DEV).train()
    ref = copy.deepcopy(unit)
    unit.fused_impl = FusedExchange()
    xs = inputs(3, 2, 8, 12, CL)
    if packed:
        ref.fused_impl = FusedExchange()
        xs = [x.detach().bfloat16().requires_grad_() for x in xs]
    backend = "inductor" if DEV == "cuda" else "aot_eager"
    compiled = torch.compile(unit, fullgraph=True, backend=backend)
    out_c, out_r = compiled(xs), ref(xs)
    for a, r in zip(out_c, out_r):
        close(a, r, 1e-5)
    weighted_loss(out_c).backward()
    assert all(p.grad is not None for p in unit.parameters())
    if packed:
        weighted_loss(out_r).backward()
        for a, r in zip(unit.parameters(), ref.parameters()):
            assert a.grad.dtype == torch.float32
            close(a.grad, r.grad, 1e-5)


def test_unsupported_structure_falls_back_to_reference():
    unit = randomize(ExchangeUnit(CHANNELS[:2], 2)).to(DEV).eval()
    unit[0][1][1] = torch.nn.BatchNorm2d(4, affine=False).to(DEV)     # no affine: not fused
    assert not unit_supported(unit)
    unit.fused_impl = FusedExchange()
    xs = [x.detach() for x in inputs(2, 1, 8, 8, NCHW)]
    with torch.no_grad(), count_launches() as launches:
        unit(xs)
    assert launches.n == 0


def test_mismatched_branches_are_a_clear_error():
    m = set_fused(hr_module(2), FusedExchange())
    with pytest.raises(ValueError, match=r"ExchangeUnit branch 1: expected shape"):
        m.fuse_layers([torch.randn(1, 4, 8, 8, device=DEV), torch.randn(1, 6, 3, 4, device=DEV)])


def test_auto_backend_uses_reference_on_cpu():
    m = HRNet.from_config("w18_small_128x96", backend="auto")
    x = [torch.zeros(1, 18, 8, 8), torch.zeros(1, 36, 4, 4)]
    assert all(u.fused_impl is not None and not u.fused_impl.applies(u, x) for u in m.exchange_units())
    assert m.transition_impl is not None and not m.transition_impl.applies(torch.zeros(1, 1, 2, 2))


def test_models_do_not_import_ops():
    """Dependencies point one way: hrfast.ops implements the hooks of hrfast.models."""
    models = Path(__file__).resolve().parent.parent / "hrfast" / "models"
    for path in models.glob("*.py"):
        assert not re.search(r"from \.\.ops|import hrfast\.ops|from hrfast\.ops", path.read_text()), path.name


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="real W32 shapes need a CUDA GPU (too slow in the interpreter)")
# fp32 1e-4: TF32 off, B*H*W-long sums in another order; bf16: within twice eager's error
@pytest.mark.parametrize("batch", [32, 64])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_w32_stage4_unit_on_cuda(batch, mode):
    """W32 256x192 stage-4 exchange unit (64x48 ... 8x6), channels_last: fp32 forward, BN
    statistics and gradients; bf16 forward within twice eager's error."""
    torch.manual_seed(0)
    ch = [32, 64, 128, 256]
    ref = randomize(ExchangeUnit(ch, 4)).cuda().train(mode == "train")
    fused = copy.deepcopy(ref)
    fused.fused_impl = FusedExchange()
    xs = [torch.randn(batch, c, 64 >> j, 48 >> j, device="cuda").contiguous(memory_format=CL).requires_grad_()
          for j, c in enumerate(ch)]
    xf = [x.detach().clone().requires_grad_() for x in xs]
    out_r, out_f = ref(xs), fused(xf)
    for a, r in zip(out_f, out_r):
        close(a, r, 1e-4)
    for (k, a), (_, r) in zip(fused.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4, msg=k)
    weighted_loss(out_r).backward()
    weighted_loss(out_f).backward()
    for (k, a), (_, r) in zip(fused.named_parameters(), ref.named_parameters()):
        close(a.grad, r.grad, 1e-3)
    gold = copy.deepcopy(ref).double()([x.detach().double() for x in xs])
    xb = [x.detach().bfloat16() for x in xs]
    with torch.no_grad():
        out_e = copy.deepcopy(ref).bfloat16()(xb)
        out_fb = copy.deepcopy(fused).bfloat16()(xb)
    assert_within_twice_eager(out_fb, out_e, gold)


def test_folded_batchnorm_runs_fused():
    """After hrfast.optimize's BN folding (BN -> Identity, conv bias), the fused inference plan
    applies each conv's bias as its epilogue: the same outputs as the unfolded reference."""
    from hrfast.deploy import fold_batchnorm
    ref = randomize(HRNet(TINY_SPEC)).to(DEV, memory_format=CL).eval()
    folded = copy.deepcopy(ref)
    fold_batchnorm(folded)
    folded.set_backend("triton")
    x = torch.randn(1, 3, 64, 64, device=DEV).contiguous(memory_format=CL)
    with torch.no_grad(), count_launches() as launches:
        a, r = folded(x), ref(x)
    assert launches.n > 0
    close(a, r, 1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_optimize_without_compile_replays_a_cuda_graph():
    from hrfast import optimize
    from hrfast.deploy import CudaGraphNet
    ref = randomize(HRNet(TINY_SPEC)).cuda().eval()
    opt = optimize(ref, compile=False, device="cuda", dtype="fp32")
    assert isinstance(opt.net, CudaGraphNet)
    for _ in range(2):   # capture, then replay with new data
        x = torch.randn(2, 3, 64, 64, device="cuda")
        with torch.no_grad():
            close(opt(x), ref(x), 1e-3)
