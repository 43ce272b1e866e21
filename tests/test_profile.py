"""hrfast.profile: the multiply-accumulates of a forward pass, as `hrfast info` prints them."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrfast.models import build_model
from hrfast.profile import count_macs


def torch_count(model: nn.Module) -> int:
    """torch's own counter (convolutions and matrix products, the same convention), on a real
    forward pass."""
    w, h = model.input_size
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, h, w))
    return counter.get_total_flops()


def test_count_macs_equals_torchs_counter_on_the_cpu_and_on_meta():
    """The small pose net and the classification net (convs and a linear layer): the hooks'
    count, on real weights and on a shapes-only build, is half of torch's FLOPs."""
    for name in ("w18_small_128x96", "cls_hrnet_w18_small_64"):
        model = build_model(name)
        flops = torch_count(model)
        with torch.device("meta"):
            shapes_only = build_model(name)
        assert count_macs(model, model.input_size) == count_macs(shapes_only, shapes_only.input_size) \
            == {"macs": flops / 2, "flops": float(flops)}, name


def test_count_macs_leaves_the_model_as_it_was():
    """BN is skipped while counting (it counts for nothing); afterwards every BN runs again,
    and the train/eval mode is back."""
    model = build_model("w18_small_128x96").train()
    x = torch.randn(2, 3, 128, 96)
    count_macs(model, model.input_size)
    assert model.training
    assert not [m for m in model.modules() if "forward" in vars(m)]
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(x)
    assert not torch.equal(bn.running_mean, before)      # a train-mode BN updated its statistics


def test_a_shapes_only_build_skips_the_random_initialisation(monkeypatch):
    """On the meta device there are no values to fill, and torch's initialisers run there as
    slow Python decompositions: init_weights returns at once. On the CPU the official N(0,
    0.001) initialisation still runs."""
    model = build_model("w18_small_128x96")
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 10000)
    assert abs(float(conv.weight.detach().std()) - 0.001) < 2e-4

    def refuse(*args, **kwargs):
        raise AssertionError("a random initialiser ran on the meta device")

    monkeypatch.setattr(nn.init, "normal_", refuse)
    monkeypatch.setattr(nn.init, "kaiming_normal_", refuse)
    for name in ("w18_small_128x96", "cls_hrnet_w18_small_64"):
        with torch.device("meta"):
            assert next(build_model(name).parameters()).is_meta
