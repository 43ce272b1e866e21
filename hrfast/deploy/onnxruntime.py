"""The onnxruntime runtime of :func:`hrfast.optimize`: the BN-folded network, exported to
ONNX, run by onnxruntime's CPU execution provider (fp32)."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..extras import require
from .export import onnx
from .model import OptimizedModel, RuntimeNet
from .plan import Plan
from .torch_runtime import frozen_inference_copy


def onnxruntime_runner(model: nn.Module, threads: Optional[int] = None) -> Callable:
    """``model`` exported to ONNX and run by onnxruntime on the CPU, as a callable (N, 3, H, W)
    float tensor -> float32 heatmaps; ``threads`` intra-op threads (default: torch's, so the
    two compete on equal terms)."""
    ort = require("onnxruntime", "optimize(runtime='onnxruntime')")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:     # the session holds the graph once built
        path = onnx(copy.deepcopy(model).cpu(), Path(tmp) / "hrnet.onnx", check=False)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {"image": x.detach().cpu().float().numpy()})[0])
    run.dtype = torch.float32
    return run


def build(model: nn.Module, plan: Plan, **_) -> OptimizedModel:
    runner = onnxruntime_runner(frozen_inference_copy(model, plan))
    plan.note("onnxruntime CPU execution provider, fp32", "its graph optimizer fuses conv+ReLU/add")
    plan.note("no torch.compile", "the runtime compiles the graph itself")
    return OptimizedModel(RuntimeNet(runner, "onnxruntime fp32"), plan, model, input_dtype=torch.float32,
                          call_context=torch.no_grad)
