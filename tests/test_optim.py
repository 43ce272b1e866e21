"""build_optimizer: the fused step against torch's default (per-tensor loop) step, and resume."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

from hrfast.engine.optim import build_optimizer, fused_supported, load_optimizer_state


def _net():
    torch.manual_seed(0)
    # no bias before BN (as in HRNet): BN cancels its gradient to rounding noise, which Adam's
    # g / sqrt(v) then amplifies to full-size steps of arbitrary sign in either implementation
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))


def _train(net, opt, steps=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(2, 3, 9, 7, generator=g)
        loss = net(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name,kw", [
    ("adam", {}),                                                         # the official recipe
    ("adamw", {"weight_decay": 1e-2}),                                    # decoupled decay
    ("sgd", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": True}),   # the official SGD option
])
def test_fused_step_matches_the_default_step(name, kw):
    a, b = _net(), _net()
    fast = build_optimizer(a.parameters(), name, 1e-2, **kw)
    slow = build_optimizer(b.parameters(), name, 1e-2, fused=False, **kw)
    assert fast.param_groups[0]["fused"] is True and not slow.param_groups[0]["fused"]
    _train(a, fast)
    _train(b, slow)
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        # same update rule; the fused kernel orders the float32 arithmetic differently, which
        # after 5 steps at lr 1e-2 leaves differences of a few float32 ulps of the weights
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=k)


def test_load_keeps_the_fused_step_and_continues_exactly():
    net = _net()
    opt = build_optimizer(net.parameters(), "adam", 1e-2)
    _train(net, opt, steps=2)
    saved_net, saved_state = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    _train(net, opt, steps=3, seed=2)

    # a state saved by a run on the default step must not switch the resumed run off fused
    slow_state = copy.deepcopy(saved_state)
    for g in slow_state["param_groups"]:
        g["fused"] = None
    other = _net()
    other.load_state_dict(saved_net)
    opt2 = build_optimizer(other.parameters(), "adam", 1e-2)
    load_optimizer_state(opt2, slow_state)
    assert opt2.param_groups[0]["fused"] is True
    _train(other, opt2, steps=3, seed=2)
    for pa, pb in zip(net.parameters(), other.parameters()):
        assert torch.equal(pa, pb)        # same kernel, same state, same data: bit for bit


def test_fused_supported_and_bad_arguments():
    assert fused_supported([torch.zeros(2)]) and not fused_supported([torch.zeros(2, dtype=torch.int32)])
    assert not fused_supported([])
    net = _net()
    with pytest.raises(ValueError, match="optimizer name must be one of"):
        build_optimizer(net.parameters(), "lamb")
    with pytest.raises(ValueError, match="params is empty"):
        build_optimizer([], "adam")
    with pytest.raises(ValueError, match="momentum/nesterov are SGD arguments"):
        build_optimizer(net.parameters(), "adam", momentum=0.9)
    with pytest.raises(ValueError, match="fused=True needs floating-point"):
        build_optimizer([torch.zeros(2, dtype=torch.float64).to_sparse()], "sgd", fused=True)
    # parameter groups work as in torch.optim
    groups = [{"params": list(net[0].parameters())}, {"params": list(net[3].parameters()), "lr": 1e-4}]
    opt = build_optimizer(groups, "adam", 1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4] and opt.param_groups[1]["fused"]


def test_a_torch_without_the_fused_kernel_gets_the_default_step(monkeypatch):
    """Older torch (CPU fused kernels came in 2.4-2.5) refuses fused=True at construction:
    the automatic choice then falls back, and an explicit fused=True still raises."""
    real = torch.optim.Adam

    class OldAdam(real):
        def __init__(self, params, *args, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                                   "of supported devices")
            super().__init__(params, *args, **kw)
    monkeypatch.setattr(torch.optim, "Adam", OldAdam)
    opt = build_optimizer(_net().parameters(), "adam", 1e-3)
    assert isinstance(opt, OldAdam) and not opt.param_groups[0]["fused"]
    with pytest.raises(RuntimeError, match="fused=True"):
        build_optimizer(_net().parameters(), "adam", 1e-3, fused=True)


def test_the_cosine_schedule_warms_up_then_decays_to_a_hundredth():
    import math

    from hrfast.config import get_config, merge_dotted
    from hrfast.engine.optim import CosineFactor, build_scheduler
    from hrfast.settings import settings_of
    f = CosineFactor(warmup=2, end=10)
    assert [round(f(e), 6) for e in (0, 1, 2)] == [0.1, 0.55, 1.0]          # hand-derived
    assert math.isclose(f(6), 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert math.isclose(f(10), 0.01) and math.isclose(f(50), 0.01)
    t = settings_of(merge_dotted(get_config("w18_small_128x96"), ["TRAIN.END_EPOCH=10", "TRAIN.LR=0.002",
                                                                  "HRFAST.LR_SCHEDULE=cosine",
                                                                  "HRFAST.WARMUP_EPOCHS=2"])).train
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    sched = build_scheduler(opt, t)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert math.isclose(lrs[0], 0.0002) and math.isclose(lrs[2], 0.002) and lrs[9] < lrs[5] < lrs[2]
    again = build_scheduler(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002), t)
    again.load_state_dict(sched.state_dict())                      # a resumed run continues the curve
    assert again.last_epoch == 10
    with pytest.raises(ValueError, match="HRFAST.LR_SCHEDULE must be one of step, cosine"):
        build_scheduler(opt, dataclasses.replace(t, schedule="linear"))
