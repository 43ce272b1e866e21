"""``hrfast.deploy``: make a trained model fast where it runs, keeping its outputs.

:func:`optimize` makes a :class:`~hrfast.deploy.plan.Plan` (pure, printed with
``verbose=True``) and hands it to the module of its runtime:

- ``torch_runtime``: BN folded, channels_last, the fused Triton exchange units on CUDA,
  ``torch.compile`` or CUDA graphs; training keeps BN and runs under autocast;
- ``int8``: torchao's post-training int8 graph, compiled by Inductor (x86 CPUs);
- ``openvino`` and ``onnxruntime``: the ONNX export compiled by those CPU runtimes;
- ``export``: ONNX files and OpenVINO IR (``hrfast.export``).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from . import export, int8, onnxruntime, openvino, torch_runtime
from .fold import fold_batchnorm
from .int8 import quantize_int8
from .model import CudaGraphNet, OptimizedModel, RuntimeNet
from .plan import Plan, make_plan
from .train_step import TrainStep

_BUILDERS = {"torch": torch_runtime.build, "int8": int8.build, "openvino": openvino.build,
             "onnxruntime": onnxruntime.build}

__all__ = ["optimize", "maybe_optimize", "make_plan", "Plan", "OptimizedModel", "CudaGraphNet", "RuntimeNet",
           "TrainStep", "fold_batchnorm", "quantize_int8", "export"]


def optimize(model: nn.Module, *, mode: str = "inference", dtype: Optional[str] = None,
             compile: bool = True, device=None, verbose: bool = False, calibration=None,
             runtime: str = "auto") -> OptimizedModel:
    """Return a fast version of ``model`` for ``mode`` = ``"inference"`` or ``"training"``.

    Args:
        dtype: ``None`` picks (bf16 on CUDA and native-bf16 CPUs, else fp32); or ``"fp32"``,
            ``"bf16"``, ``"fp16"``, or ``"int8"`` (CPU inference only, needs ``calibration``
            and torchao: :func:`quantize_int8`).
        calibration: for int8, a (N, 3, H, W) float tensor or an iterable of them, normalized
            like the model's inputs (a few hundred real crops are plenty).
        compile: ``torch.compile`` the torch network (inference: ``max-autotune`` with CUDA
            graphs on GPU for fixed shapes, freezing on the CPU). Without it, CUDA inference
            replays CUDA graphs.
        device: where it will run (default: the model's device).
        runtime: ``"auto"`` (default): the fastest runtime installed for the mode, device and
            dtype, which is OpenVINO for CPU inference in fp32/bf16 when the openvino package
            is installed, and torch otherwise; or ``"torch"``, ``"openvino"`` (CPU inference,
            fp32/bf16), ``"onnxruntime"`` (CPU inference, fp32).
    Inference folds BN and leaves ``model`` untouched (it works on a copy). Training keeps BN,
    shares ``model``'s parameters (so an optimizer over ``model.parameters()`` trains it), and
    runs forward under autocast; its ``train_step(optimizer, loss_fn)`` is the whole step
    (forward, loss, backward, optimizer), replayed from a CUDA graph on CUDA.
    """
    if device is None:
        device = next(model.parameters()).device
    plan = make_plan(mode, dtype, compile, device, runtime)
    out = _BUILDERS[plan.runtime](model, plan, calibration=calibration)
    if verbose:
        print(plan.report())
    return out


def maybe_optimize(model: nn.Module, runtime: Optional[str], device, dtype: Optional[str] = None,
                   verbose: bool = True) -> nn.Module:
    """``model`` itself when ``runtime`` is None, else :func:`optimize` on that runtime, which
    prints what it applied. onnxruntime defaults to fp32, the only precision its CPU provider
    runs (auto would pick bf16 on a bf16 CPU)."""
    if not runtime:
        return model
    if runtime == "onnxruntime" and dtype is None:
        dtype = "fp32"
    return optimize(model.to(device), device=device, runtime=runtime, dtype=dtype, verbose=verbose)

