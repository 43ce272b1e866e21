"""Export: ONNX, and OpenVINO IR through it.

``hrfast.export.onnx(model, path)`` writes the network as an ONNX graph of standard operators.
The exchange units run their reference path for export, and the custom ops (targets, decoding)
are not part of the network. With onnxruntime installed, ``check=True`` runs the file and
compares its heatmaps with PyTorch's. ``hrfast.export.openvino(model, path)`` converts that
graph to OpenVINO's IR (``.xml`` + ``.bin``), for Intel's CPU runtime. The runtimes that run
these graphs in memory are ``hrfast.deploy.openvino`` and ``hrfast.deploy.onnxruntime``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..extras import installed, require


def onnx(model: nn.Module, path, input_size: Optional[Sequence[int]] = None, batch: int = 1,
         opset: int = 17, dynamic_batch: bool = True, check: bool = True, atol: float = 1e-4) -> Path:
    """Export ``model`` (an HRNet, eval mode) to ``path``.

    Args:
        input_size: (width, height) of the input; default ``model.input_size``.
        dynamic_batch: leave the batch dimension free in the graph.
        check: run the exported file in onnxruntime (when installed) on a random input and
            raise if the heatmaps differ from PyTorch's by more than ``atol`` times their
            largest magnitude (at least 1).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = input_size or getattr(model, "input_size", (192, 256))
    model = model.eval()
    backend = getattr(model, "backend", None)
    if backend not in (None, "reference") and hasattr(model, "set_backend"):
        model.set_backend("reference")          # the fused path has no ONNX form
    x = torch.randn(batch, 3, h, w)
    kwargs = dict(input_names=["image"], output_names=["heatmaps"], opset_version=opset)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"image": {0: "batch"}, "heatmaps": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
    if backend not in (None, "reference") and hasattr(model, "set_backend"):
        model.set_backend(backend)
    if check:
        if not installed("onnxruntime"):
            return path
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        xb = torch.randn(max(batch, 2) if dynamic_batch else batch, 3, h, w)
        got = torch.from_numpy(sess.run(None, {"image": xb.numpy()})[0])
        with torch.no_grad():
            ref = model(xb)
        err = (got - ref).abs().max().item()
        tol = atol * max(1.0, ref.abs().max().item())   # relative to the heatmaps' scale
        if err > tol:
            raise RuntimeError(f"ONNX export check failed: max |onnxruntime - torch| = {err:.2e} > {tol:.2e}")
    return path


def openvino_package():
    return require("openvino", "OpenVINO (export and optimize(runtime='openvino'))")


def openvino_model(model: nn.Module, input_size, batch: int, dynamic_batch: bool):
    """``model`` through :func:`onnx` into an ``openvino.Model`` (graph and weights in memory)."""
    ov = openvino_package()
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx(model, Path(tmp) / "hrnet.onnx", input_size, batch, dynamic_batch=dynamic_batch, check=False)
        return ov.convert_model(str(path))     # reads the file completely; the folder can go


def openvino(model: nn.Module, path, input_size: Optional[Sequence[int]] = None, batch: int = 1,
             dynamic_batch: bool = True) -> Path:
    """Write ``model`` (an HRNet, eval mode) as OpenVINO IR: ``path`` (``.xml``) and the
    weights beside it (``.bin``), in fp32 (no fp16 compression: the CPU plugin picks its own
    inference precision at compile time, see :func:`openvino_runner`). Returns ``path``."""
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"path must end in .xml (OpenVINO IR), got {str(path)!r}")
    converted = openvino_model(model, input_size, batch, dynamic_batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    openvino_package().save_model(converted, str(path), compress_to_fp16=False)
    return path
