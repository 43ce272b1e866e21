"""joints_mse_loss: the heatmap loss from the joints (C++, CUDA) against its twin, which is the
official JointsMSELoss on materialised targets; gradients, dtypes, opcheck, torch.compile, and
training with HRFAST.FUSED_LOSS."""
import pytest
import torch
from conftest import requires_cuda
from test_targets import sample_inputs

from hrfast.engine.loss import JointsMSELoss, JointsOHKMMSELoss
from hrfast.ops.heatmap_loss import HAS_OP, joints_mse_loss, joints_mse_loss_ref
from hrfast.ops.targets import gaussian_targets_ref, msra_window

needs_op = pytest.mark.skipif(not HAS_OP, reason="hrfast._C not built (or built before joints_mse)")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

# (B, K, image (W, H), heatmap (W, H), sigma): minimal, odd (non-integer 3 sigma), real W32
# 256x192 at 17 joints, and COCO-WholeBody's 133 at one person
SHAPES = [(1, 3, (8, 8), (2, 2), 1.0), (3, 5, (100, 70), (25, 18), 2.5), (4, 17, (192, 256), (48, 64), 2.0),
          (1, 133, (192, 256), (48, 64), 2.0)]


def case(B, K, image, heatmap, sigma, seed=0, dtype=torch.float32):
    joints, visible = sample_inputs(B, K, image, seed)
    g = torch.Generator().manual_seed(seed + 1)
    pred = (torch.rand(B, K, heatmap[1], heatmap[0], generator=g) * 1.2 - 0.1).to(dtype)
    return pred, joints, visible


# float32: the twin averages float32 squares (pairwise), the kernel sums in double; both are
# within a few ulps of the exact value, so 1e-5 relative bounds their difference
TOL = dict(rtol=1e-5, atol=1e-9)


@needs_op
@pytest.mark.parametrize("shape", SHAPES, ids=["minimal", "odd", "w32", "wholebody"])
@pytest.mark.parametrize("encoding", ["msra", "udp"])
@pytest.mark.parametrize("use_target_weight", [True, False])
def test_forward_and_backward_equal_the_official_loss(shape, encoding, use_target_weight):
    B, K, image, heatmap, sigma = shape
    pred, joints, visible = case(*shape)
    jw = torch.linspace(0.5, 1.5, K)
    a, b = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    fast = joints_mse_loss(a, joints, visible, image, sigma, encoding, jw, use_target_weight)
    ref = joints_mse_loss_ref(b, joints, visible, image, sigma, encoding, jw, use_target_weight)
    torch.testing.assert_close(fast, ref, **TOL)
    upstream = torch.rand(B, K)
    (fast * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-10)


def test_the_twin_is_the_official_loss_on_official_targets():
    """The twin against JointsMSELoss (the official formula) fed gaussian_targets' maps."""
    pred, joints, visible = case(*SHAPES[2])
    target, weight = gaussian_targets_ref(joints, visible, (192, 256), (48, 64), 2.0)
    official = JointsMSELoss(True).per_joint(pred, target, weight)
    assert torch.equal(joints_mse_loss_ref(pred, joints, visible, (192, 256), 2.0), official)


@needs_op
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_predictions_are_read_in_float32(dtype):
    """Autocast hands the loss bf16/fp16 heatmaps: both paths score them in float32. Against the
    loss of the same values in float64, the kernel's error is at most 2x the twin's."""
    pred, joints, visible = case(*SHAPES[2], dtype=dtype)
    target, weight = gaussian_targets_ref(joints, visible, (192, 256), (48, 64), 2.0)
    w = weight.double()[..., None, None]
    exact = 0.5 * ((pred.double() * w - target.double() * w) ** 2).flatten(2).mean(-1)
    fast = joints_mse_loss(pred, joints, visible, (192, 256), 2.0)
    ref = joints_mse_loss_ref(pred, joints, visible, (192, 256), 2.0)
    assert (ref.double() - exact).abs().max() > 0                     # the twin does round
    assert (fast.double() - exact).abs().max() <= 2 * (ref.double() - exact).abs().max()


@needs_op
def test_invisible_and_outside_joints_weigh_nothing():
    joints = torch.tensor([[[50.0, 60.0], [float("nan"), 3.0], [-500.0, 10.0], [40.0, 40.0]]])
    visible = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pred = torch.rand(1, 4, 32, 24, requires_grad=True)
    loss = joints_mse_loss(pred, joints, visible, (96, 128), 2.0)
    assert loss[0, 0] > 0 and loss[0, 1:].tolist() == [0.0, 0.0, 0.0]
    loss.sum().backward()
    assert pred.grad[0, 1:].abs().sum() == 0
    # without target weights an invisible joint still scores against an empty map (official)
    unweighted = joints_mse_loss(pred.detach(), joints, visible, (96, 128), 2.0, use_target_weight=False)
    assert torch.allclose(unweighted[0, 3], 0.5 * pred.detach()[0, 3].pow(2).mean())


def op_samples(device, encoding):
    """The op's arguments on the first three shapes; msra weighted, udp unweighted."""
    for i, (B, K, image, heatmap, sigma) in enumerate(SHAPES[:3]):
        pred, joints, visible = case(B, K, image, heatmap, sigma, seed=i)
        window = msra_window(sigma) if encoding == "msra" else torch.empty(0)
        yield (pred.to(device).requires_grad_(), joints.to(device), visible.to(device),
               torch.rand(B, K).to(device), list(image), sigma, encoding, window.to(device), encoding == "msra")


@needs_op
@pytest.mark.parametrize("encoding", ["msra", "udp"])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_schema_fake_and_autograd(device, encoding):
    op = torch.ops.hrfast.joints_mse.default
    for args in op_samples(device, encoding):
        torch.library.opcheck(op, args)


@needs_op
def test_compiles_with_its_backward():
    pred, joints, visible = case(*SHAPES[2])

    def step(p):
        return joints_mse_loss(p, joints, visible, (192, 256), 2.0).mean()
    a, b = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    torch.compile(step, fullgraph=True, backend="aot_eager")(a).backward()
    step(b).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


@requires_cuda
@pytest.mark.parametrize("encoding", ["msra", "udp"])
def test_cuda_equals_cpu(encoding):
    pred, joints, visible = case(*SHAPES[2])
    a, b = pred.clone().requires_grad_(), pred.cuda().requires_grad_()
    la = joints_mse_loss(a, joints, visible, (192, 256), 2.0, encoding)
    lb = joints_mse_loss(b, joints.cuda(), visible.cuda(), (192, 256), 2.0, encoding)
    torch.testing.assert_close(lb.cpu(), la, rtol=1e-6, atol=1e-10)       # both sum in double
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-6, atol=1e-10)


def test_losses_reduce_per_joint_losses_as_their_forward():
    pred, joints, visible = case(*SHAPES[2])
    target, weight = gaussian_targets_ref(joints, visible, (192, 256), (48, 64), 2.0)
    for crit in (JointsMSELoss(True), JointsOHKMMSELoss(True, topk=4)):
        per = crit.per_joint(pred, target, weight)
        assert torch.equal(crit.reduce(per), crit(pred, target, weight))


@needs_op
def test_training_with_the_fused_loss_follows_the_official_loss(tmp_path):
    """HRFAST.FUSED_LOSS trains as the loss on target maps does: the same losses over two steps,
    to float rounding (Adam amplifies the last bits of near-zero gradients, so the weights are
    not compared bit for bit)."""
    from test_engine import _tiny_cfg

    from hrfast.engine.train import train
    a = train(_tiny_cfg(tmp_path, epochs=1, FUSED_LOSS=False), tmp_path / "a", progress=False, max_steps_per_epoch=2)
    b = train(_tiny_cfg(tmp_path, epochs=1, FUSED_LOSS=True), tmp_path / "b", progress=False, max_steps_per_epoch=2)
    assert a["history"][0]["loss"] == pytest.approx(b["history"][0]["loss"], rel=1e-4)
