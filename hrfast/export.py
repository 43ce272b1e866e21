"""Export: ONNX, and OpenVINO IR through it.

``hrfast.export.onnx(model, path)`` writes the network as an ONNX graph of standard operators.
The exchange units run their reference path for export, and the custom ops (targets, decoding)
are not part of the network. With onnxruntime installed, ``check=True`` runs the file and
compares its heatmaps with PyTorch's. ``hrfast.export.openvino(model, path)`` converts that
graph to OpenVINO's IR (``.xml`` + ``.bin``), for Intel's CPU runtime; ``openvino_runner``
compiles a model for it in memory.
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


def _openvino_package():
    try:
        import openvino
    except ImportError:
        raise ImportError("OpenVINO export needs the openvino package: pip install openvino") from None
    return openvino


def _openvino_model(model: nn.Module, input_size, batch: int, dynamic_batch: bool):
    """``model`` through :func:`onnx` into an ``openvino.Model`` (graph and weights in memory)."""
    import tempfile

    ov = _openvino_package()
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
    converted = _openvino_model(model, input_size, batch, dynamic_batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    _openvino_package().save_model(converted, str(path), compress_to_fp16=False)
    return path


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
    converted = _openvino_model(model, None, 1, True)
    w, h = getattr(model, "input_size", (192, 256))     # the export fixes H and W (batch is free)
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    compiled = _openvino_package().Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise ValueError(f"x must be (N, 3, {h}, {w}) (the exported input size), got {tuple(x.shape)}")
        out = request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out[0].copy())        # the request reuses its output buffer
    run.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return run
