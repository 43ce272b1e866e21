"""The whole training step as one callable (hrfast.deploy.train_step): eager on the CPU, a
replayed CUDA graph on CUDA, both equal to the plain loop they stand for."""
import copy

import pytest
import torch

from hrfast import HRNet, optimize
from hrfast.deploy import TrainStep
from hrfast.engine.optim import build_optimizer

# stem, 4 stages, 2 to 4 branches, few channels (a whole HRNet the interpreter can step)
TINY = {"num_joints": 3, "stem_channels": 8,
        "stage1": {"num_modules": 1, "block": "BOTTLENECK", "num_blocks": [1], "num_channels": [4]},
        "stages": [{"num_modules": 1, "block": "BASIC", "num_blocks": [1] * n, "num_channels": [4, 8, 8, 8][:n]}
                   for n in (2, 3, 4)]}


def mse(out, target):
    return ((out.float() - target) ** 2).mean()


def batches(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, 64, 32, generator=g).to(device), torch.rand(2, 3, 16, 8, generator=g).to(device))
            for _ in range(n)]


def plain_loop(model, opt, data):
    losses = []
    for x, t in data:
        opt.zero_grad(set_to_none=True)
        loss = mse(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def test_the_step_is_the_plain_loop_on_the_cpu():
    torch.manual_seed(0)
    a = HRNet(TINY).train()
    b = copy.deepcopy(a)
    data = batches(3, "cpu")
    want = plain_loop(a, build_optimizer(a.parameters(), "adam", 1e-3), data)
    step = TrainStep(b, build_optimizer(b.parameters(), "adam", 1e-3), mse)
    got = [step(x, t) for x, t in data]
    assert not step.graph and step.graphs == 0
    assert [g.item() for g in got] == [w.item() for w in want]
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k


def test_optimize_training_gives_the_step():
    torch.manual_seed(0)
    model = HRNet(TINY)
    fast = optimize(model, mode="training", dtype="fp32", compile=False, device="cpu")
    step = fast.train_step(build_optimizer(model.parameters(), "adam", 1e-3), mse)
    before = copy.deepcopy(model.state_dict())
    x, t = batches(1, "cpu")[0]
    assert step(x, t).dim() == 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())   # the model trained
    with pytest.raises(ValueError, match="train_step needs optimize\\(model, mode='training'\\)"):
        optimize(model, dtype="fp32", compile=False, device="cpu", runtime="torch").train_step(None, mse)


def test_bad_arguments_are_clear():
    model = HRNet(TINY)
    opt = build_optimizer(model.parameters(), "adam", 1e-3)
    with pytest.raises(ValueError, match="graph=True needs the parameters on CUDA, they are on cpu"):
        TrainStep(model, opt, mse, graph=True)
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        TrainStep(model, opt, mse, warmup=0)
    with pytest.raises(ValueError, match="step needs the network's input"):
        TrainStep(model, opt, mse)()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (the GPU session runs this)")
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_the_graphed_step_is_the_plain_loop_on_cuda(backend):
    """3 eager warm-up steps, the capturing step, 3 replays, an LR schedule throughout: the same
    losses and weights as the plain loop (fp32, TF32 off; cuDNN and the fused kernels may pick
    other summation orders in the two runs, hence a tolerance)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    a = HRNet(TINY).cuda().to(memory_format=torch.channels_last).set_backend(backend).train()
    b = copy.deepcopy(a)
    data = batches(7, "cuda")
    opt_a, opt_b = (build_optimizer(m.parameters(), "adam", 1e-3) for m in (a, b))
    sched_a, sched_b = (torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (opt_a, opt_b))
    step = TrainStep(b, opt_b, mse)
    assert step.graph
    for x, t in data:
        want = plain_loop(a, opt_a, [(x, t)])[0]
        got = step(x, t)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        sched_a.step()
        sched_b.step()
    assert step.graphs == 1
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5, msg=k)
    fused = torch.optim.Adam(b.parameters(), 1e-3)      # neither fused nor capturable
    with pytest.raises(ValueError, match="needs a capturable optimizer"):
        TrainStep(b, fused, mse)
