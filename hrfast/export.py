"""Export: ONNX.

``hrfast.export.onnx(model, path)`` writes the network as an ONNX graph of standard operators.
The exchange units run their reference path for export, and the custom ops (targets, decoding)
are not part of the network. With onnxruntime installed, ``check=True`` runs the file and
compares its heatmaps with PyTorch's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn


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
        try:
            import onnxruntime as ort
        except ImportError:
            return path
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
