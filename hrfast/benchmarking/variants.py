"""The variants that ``hrfast bench --compare`` times: each builds a callable from one model."""
from __future__ import annotations

import copy
import importlib.util
import time
from typing import Callable

import torch
from torch import nn

from ..deploy import make_plan, optimize
from ..device import cpu_has_native_bf16
from ..engine.optim import build_optimizer
from ..ops.conv3x3 import install_conv3x3
from ..ops.norm_act import install_norm_act
from .measure import peak_memory_mib, synchronize

INFERENCE_VARIANTS = ("eager fp32", "eager AMP", "torch.compile", "optimize torch fp32", "optimize torch", "optimize")


# CPU-only variants and the modules each needs (any one of the tuples)
CPU_VARIANTS = {"optimize int8": (("openvino", "nncf"), ("torchao",)), "openvino int8": (("openvino", "nncf"),),
                "torchao int8": (("torchao",),), "onnxruntime fp32": (("onnxruntime",),),
                "openvino fp32": (("openvino",),), "openvino bf16": (("openvino",),)}


INT8_RUNTIMES = {"optimize int8": "auto", "openvino int8": "openvino", "torchao int8": "torch"}


def _runnable(name: str) -> bool:
    return any(all(importlib.util.find_spec(m) is not None for m in need) for need in CPU_VARIANTS[name])


def available_inference_variants(device) -> tuple:
    """INFERENCE_VARIANTS, less "optimize torch" where the default plan is that one, plus on
    the CPU: "optimize int8" when torchao is installed, "onnxruntime fp32" when onnxruntime
    is, and "openvino fp32" / "openvino bf16" (bf16 on CPUs with native bf16) when openvino
    is. The last three are the ONNX export of the same weights, run by another CPU runtime."""
    device = torch.device(device)
    names = INFERENCE_VARIANTS
    if make_plan(device=device).runtime == "torch":
        names = tuple(n for n in names if n != "optimize torch")
    if device.type != "cpu":
        return names
    extra = [name for name in CPU_VARIANTS if _runnable(name)
             and (name != "openvino bf16" or cpu_has_native_bf16())]   # else the plugin runs f32
    return names + tuple(extra)


def inference_variant(model: nn.Module, name: str, device) -> Callable:
    """The callable that ``name`` (one of INFERENCE_VARIANTS) times for ``model`` on ``device``.

    eager fp32: the reference model; eager AMP: the same under bf16 autocast; torch.compile:
    ``torch.compile`` of the reference; optimize torch fp32 / optimize torch: :func:`hrfast.optimize`
    on the torch runtime with dtype fp32 / its own dtype choice; optimize: the default call;
    optimize int8: ``optimize(dtype="int8")`` calibrated on random crops (CPU only), on the
    runtime it picks; openvino int8 / torchao int8: the same on OpenVINO (NNCF) / torch (torchao);
    onnxruntime fp32 / openvino fp32 / openvino bf16: ``optimize(dtype=..., runtime=...)``,
    the ONNX export run by that CPU runtime at that precision; the last three CPU only, see
    :func:`available_inference_variants`."""
    device = torch.device(device)
    if name == "eager fp32":
        return model
    if name == "eager AMP":
        def amp(t):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return model(t)
        return amp
    if name == "torch.compile":
        return torch.compile(model)
    if name == "optimize torch fp32":
        return optimize(model, dtype="fp32", device=device, runtime="torch")
    if name == "optimize torch":
        return optimize(model, device=device, runtime="torch")
    if name == "optimize":
        return optimize(model, device=device)
    if name in CPU_VARIANTS and device.type != "cpu":
        raise ValueError(f"the {name} variant runs on the CPU only")
    if name in INT8_RUNTIMES:
        # calibrated on random crops: the speed does not depend on the observed ranges (for
        # accuracy, calibrate on real crops, as RESULTS.md does)
        w, h = getattr(model, "input_size", (192, 256))
        gen = torch.Generator().manual_seed(0)
        calibration = [torch.randn(4, 3, h, w, generator=gen) for _ in range(2)]
        return optimize(model, dtype="int8", device=device, calibration=calibration, runtime=INT8_RUNTIMES[name])
    if name in ("onnxruntime fp32", "openvino fp32", "openvino bf16"):
        runtime, dtype = name.split()
        return optimize(model, dtype=dtype, device=device, runtime=runtime)
    raise ValueError(f"unknown variant {name!r}; choose from {INFERENCE_VARIANTS + tuple(CPU_VARIANTS)}")


def timed_variant(model: nn.Module, name: str, device, x: torch.Tensor):
    """Variant ``name`` of ``model`` on the input ``x``, built, called once (compile; timed as
    ``first_call_s``, not in the rounds) and once more: (the call, {first_call_s, peak_mib,
    dtype}); ``dtype`` is the one its convolutions run in, for the fraction of the peak."""
    device = torch.device(device)
    fn = inference_variant(model, name, device)

    def call():
        with torch.no_grad():
            fn(x)
    t0 = time.perf_counter()
    call()
    synchronize(device)
    first = time.perf_counter() - t0
    call()                                  # warm-up
    dtype = torch.bfloat16 if name == "eager AMP" else getattr(fn, "dtype", torch.float32)
    return call, {"first_call_s": first, "peak_mib": peak_memory_mib(call, device), "dtype": dtype}


TRAINING_VARIANTS = ("eager fp32", "eager fp32, fused Adam", "optimize(mode='training')")


COMPILED_TRAINING = "optimize(mode='training'), compiled"
# the optimized step with eager BN + add + ReLU instead of the fused one (hrfast::bn_act on the
# CPU, hrfast.ops.norm_act on CUDA): the fusion's share
UNFUSED_BN_TRAINING = "optimize(mode='training'), BN unfused"
# the optimized step with oneDNN's 3x3 weight gradients instead of hrfast::conv3x3_wgrad (which
# optimize installs on a CPU with AVX512-BF16 and no AMX): the kernel's share
ONEDNN_WGRAD_TRAINING = "optimize(mode='training'), oneDNN wgrad"


def training_variant(model: nn.Module, name: str, batch: int, device) -> Callable:
    """One training step (forward, MSE loss against random targets, backward, Adam at 1e-3) of
    ``name`` (one of TRAINING_VARIANTS or COMPILED_TRAINING) on a batch of random (batch, 3, H,
    W) inputs, as a callable with attributes ``dtype`` (the convolutions') and ``optimizer``.
    "eager fp32" steps with torch's default Adam; the others with the optimizer of hrfast's
    training engine (:func:`~hrfast.engine.optim.build_optimizer`, fused). The uncompiled
    optimize variant steps through ``train_step`` (a CUDA graph of the whole step on CUDA). It trains a copy of
    ``model``, so variants built from one model start from the same weights and do not disturb
    each other."""
    known = TRAINING_VARIANTS + (COMPILED_TRAINING, UNFUSED_BN_TRAINING, ONEDNN_WGRAD_TRAINING)
    if name not in known:
        raise ValueError(f"unknown training variant {name!r}; choose from {known}")
    device = torch.device(device)
    model = copy.deepcopy(model).to(device)
    net = model.train() if name.startswith("eager") else \
        optimize(model, mode="training", compile=name == COMPILED_TRAINING, device=device)
    if name == UNFUSED_BN_TRAINING:
        install_norm_act(net, enabled=False)
    if name == ONEDNN_WGRAD_TRAINING:
        install_conv3x3(net, enabled=False)
    opt = (torch.optim.Adam(model.parameters(), 1e-3) if name == "eager fp32"
           else build_optimizer(model.parameters(), "adam", 1e-3))
    w, h = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    target = torch.rand(batch, model.num_joints, h // 4, w // 4, device=device) * 0.1

    def mse(out, t):
        return ((out.float() - t) ** 2).mean()

    if name in ("optimize(mode='training')", UNFUSED_BN_TRAINING, ONEDNN_WGRAD_TRAINING):
        whole = net.train_step(opt, mse)      # on CUDA: the whole step replayed from a CUDA graph

        def step():
            whole(x, target)
    else:
        def step():
            loss = mse(net(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    step.dtype = getattr(net, "dtype", torch.float32)   # the convolutions' dtype, for the fraction of peak
    step.optimizer = opt
    return step
