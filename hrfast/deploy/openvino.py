"""The OpenVINO runtime of :func:`hrfast.optimize`: the BN-folded network, exported through
ONNX, compiled by OpenVINO's CPU plugin (fp32 or bf16)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .export import openvino_model, openvino_package
from .model import OptimizedModel, RuntimeNet
from .plan import Plan
from .torch_runtime import frozen_inference_copy


def openvino_runner(model: nn.Module, precision: str = "f32", threads: Optional[int] = None):
    """``model`` compiled by OpenVINO's CPU plugin, as a callable (N, 3, H, W) float tensor ->
    (N, J, H/4, W/4) float32 heatmaps tensor.

    Args:
        precision: the plugin's ``INFERENCE_PRECISION_HINT``: ``"f32"``, or ``"bf16"`` (native
            on CPUs with avx512_bf16/AMX; the plugin's default there, hence set explicitly).
        threads: inference threads (default: torch's, so the two compete on equal terms).
    """
    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}")
    converted = openvino_model(model, None, 1, True)
    w, h = getattr(model, "input_size", (192, 256))     # the export fixes H and W (batch is free)
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    compiled = openvino_package().Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise ValueError(f"x must be (N, 3, {h}, {w}) (the exported input size), got {tuple(x.shape)}")
        out = request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out[0].copy())        # the request reuses its output buffer
    run.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return run


def build(model: nn.Module, plan: Plan, **_) -> OptimizedModel:
    precision = "bf16" if plan.dtype == torch.bfloat16 else "f32"
    runner = openvino_runner(frozen_inference_copy(model, plan).cpu(), precision)
    plan.note(f"OpenVINO CPU plugin, inference precision {precision}",
              "its graph compiler fuses conv+ReLU/add and prepacks weights; it measured 1.0-1.8x "
              "faster than the torch path on the development CPU and compiles in about a second")
    plan.note("no torch.compile", "the runtime compiles the graph itself")
    return OptimizedModel(RuntimeNet(runner, f"OpenVINO {precision}"), plan, model, input_dtype=torch.float32,
                          call_context=torch.no_grad)
