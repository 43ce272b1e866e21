"""The HRNet model: official layout, parameter counts, shapes, gradients, bad input."""
import pytest
import torch

import hrfast
from hrfast import HRNet
from hrfast.models import ExchangeUnit

# Counted on the official pose_hrnet code (the paper rounds to 28.5M and 63.6M).
OFFICIAL_PARAMS = {"w32_256x192": 28_536_113, "w32_384x288": 28_536_113,
                   "w48_256x192": 63_595_745, "w48_384x288": 63_595_745}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(name):
    model = HRNet.from_config(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


def test_available_configs_lists_official_and_small():
    names = hrfast.available_configs()
    assert set(OFFICIAL_PARAMS) <= set(names)
    assert any("small" in n for n in names)


def test_state_dict_keys_and_shapes_equal_official_w32(official_w32_keys):
    assert len(official_w32_keys) == 1754
    sd = HRNet.from_config("w32_256x192").state_dict()
    ours = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert dict(ours) == dict(official_w32_keys)
    assert [k for k, _ in ours] == [k for k, _ in official_w32_keys]  # same order too


def test_strict_state_dict_round_trip(tmp_path):
    a = HRNet.from_config("w18_small_128x96").eval()
    # make the weights non-trivial so the comparison means something
    for p in a.parameters():
        p.data.normal_(0, 0.05)
    for m in a.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(a.state_dict(), tmp_path / "ckpt.pth")
    b = HRNet.from_config("w18_small_128x96").eval()
    b.load_state_dict(torch.load(tmp_path / "ckpt.pth", weights_only=True), strict=True)
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_strict_load_rejects_other_layout():
    sd = HRNet.from_config("w32_256x192").state_dict()
    sd["unexpected.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="unexpected"):
        HRNet.from_config("w32_256x192").load_state_dict(sd, strict=True)


@pytest.mark.parametrize("name,hw", [("w32_256x192", (256, 192)), ("w32_384x288", (384, 288))])
def test_output_shape(name, hw):
    model = HRNet.from_config(name).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *hw))
    assert y.shape == (1, 17, hw[0] // 4, hw[1] // 4)


def test_any_shape_is_constructible():
    spec = {"num_joints": 14, "stem_channels": 32,
            "stage1": {"num_modules": 1, "block": "BOTTLENECK", "num_blocks": [1], "num_channels": [16]},
            "stages": [{"num_modules": 2, "block": "BASIC", "num_blocks": [1, 2], "num_channels": [8, 16]},
                       {"num_modules": 1, "block": "BASIC", "num_blocks": [1, 1, 1], "num_channels": [8, 16, 24]}]}
    model = HRNet.from_config(spec).eval()
    with torch.no_grad():
        y = model(torch.randn(3, 3, 64, 96))
    assert y.shape == (3, 14, 16, 24)
    assert not hasattr(model, "stage4")


def test_official_initialization():
    model = HRNet.from_config("w32_256x192")
    w = model.stage3[0].branches[1][0].conv1.weight
    assert abs(w.std().item() - 0.001) < 1e-4  # 36,864 samples: std error ~0.4%
    assert torch.all(model.final_layer.bias == 0)
    bn = model.stage2[0].fuse_layers[0][1][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_gradients_reach_every_parameter():
    model = HRNet.from_config("w18_small_128x96").train()
    y = model(torch.randn(2, 3, 128, 96))
    (y ** 2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # The last module of the last stage fuses into branch 0 only; the other branches' last blocks
    # still run (as in the official code) but get no gradient. Everything else must.
    last = f"stage4.{len(model.stage4) - 1}.branches."
    assert all(n.startswith(last) and not n.startswith(last + "0.") for n in missing), missing


def test_exchange_unit_keeps_official_key_names():
    unit = ExchangeUnit([32, 64, 128], num_outputs=3)
    keys = set(unit.state_dict())
    assert "0.1.0.weight" in keys and "0.2.1.running_var" in keys   # upsample paths conv, BN
    assert "2.0.1.0.weight" in keys and "2.0.0.1.weight" in keys     # two-step downsample chain
    assert not any(k.startswith("1.1.") for k in keys)               # i == j is None


def test_exchange_unit_equals_manual_formula():
    unit = ExchangeUnit([4, 8], num_outputs=2).eval()
    x0, x1 = torch.randn(2, 4, 8, 6), torch.randn(2, 8, 4, 3)
    up = torch.nn.functional.interpolate(unit[0][1][1](unit[0][1][0](x1)), scale_factor=2, mode="nearest")
    down = unit[1][0][0][1](unit[1][0][0][0](x0))
    y0, y1 = unit([x0, x1])
    assert torch.allclose(y0, torch.relu(x0 + up))
    assert torch.allclose(y1, torch.relu(down + x1))


@pytest.mark.parametrize("bad,match", [
    (torch.randn(1, 4, 128, 96), "3 channels"),
    (torch.randn(3, 128, 96), "4-D"),
    (torch.randn(1, 3, 100, 96), "multiples of 32"),
])
def test_bad_input_is_named(bad, match):
    model = HRNet.from_config("w18_small_128x96")
    with pytest.raises(ValueError, match=match):
        model(bad)


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown config name 'w33_256x192'.*did you mean 'w32_256x192'"):
        HRNet.from_config("w33_256x192")


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        HRNet.from_config("w18_small_128x96", backend="cudnn")


def test_exchange_unit_rejects_mismatched_branches():
    unit = ExchangeUnit([4, 8], num_outputs=2)
    with pytest.raises(ValueError, match="branch 1: expected shape"):
        unit.check_inputs([torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)])


def test_channels_last_matches_contiguous():
    model = HRNet.from_config("w18_small_128x96").eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    # same math, different reduction order inside oneDNN convs: fp32 rounding only
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_close_to_fp32(dtype):
    model = HRNet.from_config("w18_small_128x96").eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=dtype):
            out = model(x)
    assert out.dtype == dtype
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 5e-2, rel  # bf16 has 8 mantissa bits; ~1e-2 relative error through 20+ layers
