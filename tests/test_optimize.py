"""hrfast.optimize (BN folding, dtype choice, compile) and ONNX export."""
import copy
import importlib.util

import pytest
import torch

from hrfast import HRNet
from hrfast.deploy import RuntimeNet, fold_batchnorm, optimize
from hrfast.deploy.int8 import _functional_relus
from hrfast.ops.decode import decode_heatmaps


@pytest.fixture(scope="module")
def trained_like():
    """The small net with non-trivial BN statistics and weights (as after training)."""
    torch.manual_seed(0)
    m = HRNet.from_config("w18_small_128x96")
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight)
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_folded_bn_equals_unfolded(trained_like):
    import copy
    x = torch.randn(2, 3, 128, 96)
    folded = copy.deepcopy(trained_like)
    n = fold_batchnorm(folded)
    assert n == sum(isinstance(m, torch.nn.BatchNorm2d) for m in trained_like.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, got = trained_like(x), folded(x)
    # fp32: folding reassociates (w * g / s) x + b; relative error ~1e-6 of the activations
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(HRNet.from_config("w18_small_128x96").train())


def test_optimize_fp32_parity_and_report(trained_like, capsys):
    x = torch.randn(2, 3, 128, 96)
    opt = optimize(trained_like, dtype="fp32", compile=False, verbose=True, runtime="torch")
    out = capsys.readouterr().out
    assert "folded" in out and "channels_last" in out and "dtype float32" in out
    with torch.no_grad():
        ref, got = trained_like(x), opt(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained_like.modules())  # original untouched


def test_optimize_bf16_keypoint_drift_is_bounded(trained_like):
    x = torch.randn(4, 3, 128, 96)
    opt = optimize(trained_like, dtype="bf16", compile=False, runtime="torch")
    with torch.no_grad():
        ref, got = trained_like(x), opt(x)
    # the output-scale relative error of bf16 (8-bit mantissa) through ~40 layers
    rel = (got - ref).abs().max() / ref.abs().max()
    assert rel < 0.1
    c_ref, _ = decode_heatmaps(ref, "dark")
    c_got, _ = decode_heatmaps(got, "dark")
    # random-weight maps have flat peaks, so argmax ties can flip: bound the median drift
    assert (c_got - c_ref).norm(dim=-1).median() < 1.0


def test_optimize_compiled_matches(trained_like):
    x = torch.randn(1, 3, 128, 96)
    opt = optimize(trained_like, dtype="fp32", compile=True, runtime="torch")
    with torch.no_grad():
        ref, got = trained_like(x), opt(x)
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-3)


def test_optimize_training_still_trains():
    torch.manual_seed(0)
    m = HRNet.from_config("w18_small_128x96")
    opt_m = optimize(m, mode="training", dtype="bf16", compile=False)
    optim = torch.optim.Adam(m.parameters(), 1e-3)
    x, target = torch.randn(4, 3, 128, 96), torch.rand(4, 17, 32, 24) * 0.1
    losses = []
    for _ in range(5):
        loss = ((opt_m(x) - target) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert m.conv1.weight.grad is not None            # the original parameters are trained


def test_optimize_bad_arguments(trained_like):
    with pytest.raises(ValueError, match="mode must be"):
        optimize(trained_like, mode="fast")
    with pytest.raises(ValueError, match="dtype must be one of"):
        optimize(trained_like, dtype="int4")
    with pytest.raises(ValueError, match="needs calibration"):
        optimize(trained_like, dtype="int8")
    with pytest.raises(ValueError, match=r"calibration must hold \(N, 3, H, W\) float tensors, got \(2, 128, 96\)"):
        optimize(trained_like, dtype="int8", calibration=torch.randn(2, 128, 96))
    with pytest.raises(ValueError, match="inference on the CPU"):
        optimize(trained_like, mode="training", dtype="int8")
    with pytest.raises(ValueError, match="needs compile=True"):
        optimize(trained_like, dtype="int8", compile=False, calibration=torch.randn(2, 3, 128, 96), runtime="torch")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed (CI installs it)")
def test_onnx_round_trip(trained_like, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from hrfast.deploy.export import onnx
    path = onnx(trained_like, tmp_path / "m.onnx", check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 128, 96)                   # another batch size: the batch axis is dynamic
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        ref = trained_like(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=1e-3)


def test_readme_entry_points():
    """The README calls these as hrfast.optimize(...) and hrfast.export.onnx(...) after `import hrfast`."""
    import hrfast
    assert hrfast.optimize is optimize
    from hrfast.deploy.export import onnx
    assert hrfast.export.onnx is onnx


def test_onnxruntime_bench_variant_gives_the_reference_heatmaps(trained_like):
    """The "onnxruntime fp32" row of ``hrfast bench --compare`` computes the same function."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (CI installs it)")
    from hrfast.benchmarking import inference_variant
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        ref = trained_like(x)
    got = inference_variant(trained_like, "onnxruntime fp32", "cpu")(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    # fp32; onnxruntime folds BN and fuses conv+ReLU, so only rounding differs
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)


def test_openvino_export_and_bench_variants(trained_like, tmp_path):
    """OpenVINO IR export reloads with the same heatmaps, and the "openvino fp32/bf16" rows of
    ``hrfast bench --compare`` compute the reference function."""
    pytest.importorskip("openvino", reason="openvino not installed (CI installs it)")
    from hrfast.benchmarking import inference_variant
    from hrfast.deploy.export import openvino
    from hrfast.deploy.openvino import openvino_core, openvino_runner
    from hrfast.device import cpu_has_native_bf16
    x = torch.randn(3, 3, 128, 96)                   # batch 3: the exported batch axis is dynamic
    with torch.no_grad():
        ref = trained_like(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager_bf16 = trained_like(x).float()
    scale = ref.abs().max().item()

    xml = openvino(trained_like, tmp_path / "m.xml")
    assert xml.with_suffix(".bin").stat().st_size > 1e6          # the weights, in fp32
    compiled = openvino_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = torch.from_numpy(compiled.create_infer_request().infer({0: x.numpy()})[0].copy())
    # fp32: the plugin folds BN and fuses conv+ReLU, so only rounding differs
    torch.testing.assert_close(got, ref, atol=1e-4 * scale, rtol=1e-4)

    run = inference_variant(trained_like, "openvino fp32", "cpu")
    got = run(x)
    assert got.shape == ref.shape and got.dtype == torch.float32 and run.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-4 * scale, rtol=1e-4)
    if cpu_has_native_bf16():
        got16 = inference_variant(trained_like, "openvino bf16", "cpu")(x)
        # bf16 judged against eager's own bf16 (autocast) error, both vs the fp32 reference;
        # the floor covers the two differing in which ops they keep in fp32
        err, err_eager = (got16 - ref).abs().max() / scale, (eager_bf16 - ref).abs().max() / scale
        assert err <= 2 * err_eager + 1e-2, (err, err_eager)
    with pytest.raises(ValueError, match="must end in .xml"):
        openvino(trained_like, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="precision must be one of 'f32', 'bf16', 'int8', got 'int4'"):
        openvino_runner(trained_like, "int4")
    with pytest.raises(ValueError, match="precision 'int8' needs calibration batches"):
        openvino_runner(trained_like, "int8")
    with pytest.raises(ValueError, match=r"x must be \(N, 3, 128, 96\) \(the exported input size\)"):
        run(torch.randn(3, 128, 96))
    with pytest.raises(ValueError, match=r"got \(1, 3, 256, 192\)"):
        run(torch.randn(1, 3, 256, 192))


def test_optimize_on_openvino(trained_like, capsys, monkeypatch):
    """optimize(runtime="openvino"): same call and outputs as the torch path, any batch size,
    every choice reported; wrong uses are named."""
    pytest.importorskip("openvino", reason="openvino not installed (CI installs it)")
    fast = optimize(trained_like, dtype="fp32", runtime="openvino", verbose=True)
    assert "OpenVINO CPU plugin, inference precision f32" in capsys.readouterr().out
    for batch in (1, 5):
        x = torch.randn(batch, 3, 128, 96)
        with torch.no_grad():
            ref = trained_like(x)
        got = fast(x)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        # fp32 with BN folded (here and in the plugin): reassociation only
        torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    with pytest.raises(ValueError, match="runtime='openvino' is for inference"):
        optimize(trained_like, mode="training", runtime="openvino")
    with pytest.raises(ValueError, match="runtime='openvino' runs on the CPU, got device cuda"):
        optimize(trained_like, runtime="openvino", device="cuda")
    with pytest.raises(ValueError, match="runs fp32, bf16 or int8, got dtype float16"):
        optimize(trained_like, dtype="fp16", runtime="openvino")
    with pytest.raises(ValueError, match="runtime='onnxruntime' runs fp32, got dtype bfloat16"):
        optimize(trained_like, dtype="bf16", runtime="onnxruntime")
    with pytest.raises(ValueError, match="runtime must be one of 'auto', 'torch', 'openvino', 'onnxruntime', "
                                         "got 'tensorrt'"):
        optimize(trained_like, runtime="tensorrt")
    with pytest.raises(ValueError, match="dtype='int8' runs on OpenVINO .* not runtime='onnxruntime'"):
        optimize(trained_like, dtype="int8", runtime="onnxruntime", calibration=torch.randn(2, 3, 128, 96))
    # the default (auto): OpenVINO where it applies, torch for training (and for int8, CUDA, fp16)
    auto = optimize(trained_like, dtype="fp32")
    assert isinstance(auto.net, RuntimeNet) and auto.plan.runtime == "openvino"
    # training shares (and switches to train mode) the model it gets: a copy keeps the fixture
    train_auto = optimize(copy.deepcopy(trained_like), mode="training", dtype="fp32", compile=False)
    assert not isinstance(train_auto.net, RuntimeNet) and train_auto.plan.runtime == "torch"
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)   # as if not installed
    with pytest.raises(ImportError, match="pip install openvino"):
        optimize(trained_like, dtype="fp32", runtime="openvino")


def test_plan_is_pure_and_picks_the_fastest_installed_runtime(monkeypatch):
    """make_plan builds nothing; with runtime "auto" CPU inference goes to OpenVINO exactly
    when it is installed and the dtype is one it runs."""
    import hrfast.deploy.plan as plan_module
    from hrfast.deploy import make_plan
    installed = {"openvino": True}
    monkeypatch.setattr(plan_module, "installed", lambda name: installed.get(name, False))
    assert make_plan(dtype="fp32").runtime == "openvino"
    assert make_plan(dtype="bf16").runtime == "openvino"
    assert make_plan(dtype="fp16").runtime == "torch"
    assert make_plan(dtype="int8").runtime == "int8"
    assert make_plan(mode="training", dtype="fp32").runtime == "torch"
    assert make_plan(dtype="fp32", device="cuda").runtime == "torch"
    plan = make_plan(dtype="fp32", runtime="torch", compile=False)
    assert (plan.runtime, plan.compile, plan.channels_last) == ("torch", False, True)
    assert "runtime torch: requested" in plan.report()
    installed["openvino"] = False
    auto = make_plan(dtype="fp32")
    assert auto.runtime == "torch" and "pip install 'hrfast[cpu-runtimes]'" in auto.report()
    assert not make_plan(dtype="fp32", runtime="openvino").compile    # the runtime compiles itself


def test_the_bf16_override_makes_a_cpu_without_bf16(monkeypatch):
    """HRFAST_CPU_BF16=0 makes every default take the float32 path of a CPU without native bf16
    (how the README's demo time is measured on a bf16 machine); 1 forces the bf16 path."""
    from hrfast.deploy import make_plan
    from hrfast.device import cpu_has_native_bf16, fast_training_settings
    try:
        monkeypatch.setenv("HRFAST_CPU_BF16", "0")
        cpu_has_native_bf16.cache_clear()
        assert not cpu_has_native_bf16() and make_plan().dtype == torch.float32
        assert fast_training_settings(torch.device("cpu"))["AMP"] == "none"
        monkeypatch.setenv("HRFAST_CPU_BF16", "1")
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() and make_plan().dtype == torch.bfloat16
        assert fast_training_settings(torch.device("cpu"))["AMP"] == "bf16"
    finally:
        monkeypatch.delenv("HRFAST_CPU_BF16")
        cpu_has_native_bf16.cache_clear()


def test_optimize_on_onnxruntime(trained_like):
    """optimize(runtime="onnxruntime"): the same call and function (fp32), any batch size."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (CI installs it)")
    fast = optimize(trained_like, dtype="fp32", runtime="onnxruntime")
    assert isinstance(fast.net, RuntimeNet) and fast.dtype == torch.float32
    for batch in (1, 3):
        x = torch.randn(batch, 3, 128, 96)
        with torch.no_grad():
            ref = trained_like(x)
        # fp32; onnxruntime folds BN and fuses conv+ReLU, so only rounding differs
        torch.testing.assert_close(fast(x), ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)


def test_functional_relus_keep_the_function(trained_like):
    """The int8 path swaps the blocks' shared ReLU modules for F.relu: same outputs exactly
    (a ReLU dropped from a Sequential would change them)."""
    import copy
    net = copy.deepcopy(trained_like)
    _functional_relus(net)
    assert not any(isinstance(getattr(m, "relu", None), torch.nn.ReLU) for m in net.modules()
                   if not isinstance(m, torch.nn.Sequential))
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(net(x), trained_like(x))


INT8_NEEDS = {"openvino": ("nncf", "nncf not installed (make install adds it)"),
              "torch": ("torchao", "torchao not installed (make install adds it)")}


@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_optimize_int8_keypoint_drift_is_bounded(trained_like, capsys, runtime):
    """int8 on either runtime: OpenVINO (NNCF's quantization) or torch (torchao's graph)."""
    module, why = INT8_NEEDS[runtime]
    pytest.importorskip(module, reason=why)
    calibration = [torch.randn(4, 3, 128, 96) for _ in range(2)]
    opt = optimize(trained_like, dtype="int8", calibration=calibration, verbose=True, runtime=runtime)
    report = capsys.readouterr().out
    assert "int8 post-training quantization" in report and ("NNCF" in report) == (runtime == "openvino")
    x = torch.randn(4, 3, 128, 96)
    with torch.no_grad():
        ref, got = trained_like(x), opt(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    # int8 activations (per tensor) and weights (per channel) through ~40 layers: 5% of the
    # output scale here, 4.5% on the demo's trained model (0.027 px mean DARK drift); a broken
    # graph (say, a dropped ReLU) gives 80% or more
    rel = (got - ref).abs().max() / ref.abs().max()
    assert rel < 0.15
    c_ref, _ = decode_heatmaps(ref, "dark")
    c_got, _ = decode_heatmaps(got, "dark")
    # random-weight maps have flat peaks, so argmax ties can flip: bound the median drift
    assert (c_got - c_ref).norm(dim=-1).median() < 1.0
    assert opt(torch.randn(1, 3, 128, 96)).shape == (1, 17, 32, 24)    # another batch size runs


def test_int8_plan_prefers_openvino_with_nncf(monkeypatch):
    """auto: OpenVINO's int8 when openvino and nncf are installed (measured faster), torchao's
    otherwise; each runtime can be asked for; onnxruntime runs no int8."""
    import hrfast.deploy.plan as plan_module
    from hrfast.deploy import make_plan
    installed = {"openvino": True, "nncf": True}
    monkeypatch.setattr(plan_module, "installed", lambda name: installed.get(name, False))
    assert make_plan(dtype="int8").runtime == "openvino"
    assert make_plan(dtype="int8", runtime="torch").runtime == "int8"
    assert make_plan(dtype="int8", runtime="openvino", compile=False).runtime == "openvino"
    with pytest.raises(ValueError, match="needs compile=True"):
        make_plan(dtype="int8", runtime="torch", compile=False)
    with pytest.raises(ValueError, match="not runtime='onnxruntime'"):
        make_plan(dtype="int8", runtime="onnxruntime")
    installed["nncf"] = False
    plan = make_plan(dtype="int8")
    assert plan.runtime == "int8" and "hrfast[int8-openvino]" in plan.report()


def test_optimize_int8_from_single_crop_calibration_takes_any_batch():
    # a calibration batch of 1 must not pin torchao's exported graph to batch 1
    pytest.importorskip("torchao", reason="torchao not installed (make install adds it)")
    torch.manual_seed(0)
    m = HRNet.from_config("w18_small_128x96").eval()
    opt = optimize(m, dtype="int8", calibration=[torch.randn(1, 3, 128, 96)], runtime="torch")
    assert opt(torch.randn(3, 3, 128, 96)).shape == (3, 17, 32, 24)
