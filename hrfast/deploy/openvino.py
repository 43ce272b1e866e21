"""The OpenVINO runtime of :func:`hrfast.optimize`: the BN-folded network, exported through
ONNX, compiled by OpenVINO's CPU plugin (fp32 or bf16), or quantized to int8 by NNCF first."""
from __future__ import annotations

import functools
import logging
from typing import List, Optional

import torch
from torch import nn

from ..device import cpu_has_native_bf16
from ..extras import require
from .export import openvino_model, openvino_package
from .model import OptimizedModel, RuntimeNet
from .plan import Plan
from .signal_stack import hold_signal_stack
from .torch_runtime import frozen_inference_copy

# the precisions of openvino_runner and the dtypes they run in
PRECISIONS = {"f32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


@functools.lru_cache(maxsize=None)
def openvino_core():
    """The process's one ``openvino.Core``. Each Core makes its own CPU plugin, and plugins
    destroyed in the order they were made unmap the thread's alternate signal stack (see
    :mod:`hrfast.deploy.signal_stack`); one Core that lives as long as the process makes one."""
    return openvino_package().Core()


def quantize_openvino(converted, calibration: List[torch.Tensor], keep_float: bool = True):
    """Post-training static int8 quantization of an ``openvino.Model`` by NNCF (int8 weights per
    output channel, activations per tensor, ranges observed on the ``calibration`` batches).
    ``keep_float`` leaves the first convolution (the stem's, 3 input channels) and the last (the
    final layer, whose heatmaps the decoders read to a fraction of a pixel) in float, as the
    torchao path does."""
    nncf = require("nncf", "optimize(dtype='int8') on OpenVINO")
    convs = [op.get_friendly_name() for op in converted.get_ordered_ops() if op.get_type_name() == "Convolution"]
    ignored = nncf.IgnoredScope(names=[convs[0], convs[-1]]) if keep_float and len(convs) > 1 else None
    data = nncf.Dataset([b.float().contiguous().numpy() for b in calibration])
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.WARNING)       # its INFO lines list every operation it leaves in float
    try:
        return nncf.quantize(converted, data, subset_size=len(calibration), ignored_scope=ignored)
    finally:
        log.setLevel(level)


def openvino_runner(model: nn.Module, precision: str = "f32", threads: Optional[int] = None,
                    calibration: Optional[List[torch.Tensor]] = None):
    """``model`` compiled by OpenVINO's CPU plugin, as a callable (N, 3, H, W) float tensor ->
    (N, J, H/4, W/4) float32 heatmaps tensor.

    Args:
        precision: ``"f32"``, ``"bf16"`` (the plugin's ``INFERENCE_PRECISION_HINT``; bf16 is
            native on CPUs with avx512_bf16/AMX and the plugin's default there, hence set
            explicitly), or ``"int8"``: :func:`quantize_openvino` on ``calibration`` first, the
            float parts then in bf16 where the CPU has it natively, else f32.
        threads: inference threads (default: torch's, so the two compete on equal terms).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "int8":
        if not calibration:
            raise ValueError("precision 'int8' needs calibration batches")
        require("nncf", "optimize(dtype='int8') on OpenVINO")     # before the export, not after
    converted = openvino_model(model, None, 1, True)
    w, h = getattr(model, "input_size", (192, 256))     # the export fixes H and W (batch is free)
    hint = precision
    if precision == "int8":
        converted = quantize_openvino(converted, calibration)
        hint = "bf16" if cpu_has_native_bf16() else "f32"
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    compiled = openvino_core().compile_model(converted, "CPU", config)
    hold_signal_stack()     # after the plugin's own (made on the first compile), and NNCF's
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise ValueError(f"x must be (N, 3, {h}, {w}) (the exported input size), got {tuple(x.shape)}")
        out = request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out[0].copy())        # the request reuses its output buffer
    run.dtype = PRECISIONS[precision]
    return run


def build(model: nn.Module, plan: Plan, calibration=None, **_) -> OptimizedModel:
    precision = next(name for name, dtype in PRECISIONS.items() if dtype == plan.dtype)
    net = frozen_inference_copy(model, plan).cpu()
    if precision == "int8":
        from .int8 import calibration_batches
        calibration = calibration_batches(calibration)
        plan.note("int8 post-training quantization (NNCF), OpenVINO CPU plugin",
                  "the plugin runs int8 convolutions (VNNI) with its own fusions; the first and last "
                  "convolutions stay in float")
    else:
        plan.note(f"OpenVINO CPU plugin, inference precision {precision}",
                  "its graph compiler fuses conv+ReLU/add and prepacks weights; it measured 1.0-1.8x "
                  "faster than the torch path on the development CPU and compiles in about a second")
    runner = openvino_runner(net, precision, calibration=calibration)
    plan.note("no torch.compile", "the runtime compiles the graph itself")
    return OptimizedModel(RuntimeNet(runner, f"OpenVINO {precision}"), plan, model, input_dtype=torch.float32,
                          call_context=torch.no_grad)
