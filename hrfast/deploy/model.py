"""What :func:`hrfast.optimize` returns: the built network behind the original call."""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

import torch
from torch import nn

from .plan import Plan


class OptimizedModel(nn.Module):
    """The optimized network behind the original call signature: (B, 3, H, W) float ->
    heatmaps (B, K, h, w) float32.

    Args:
        net: the built network.
        plan: the plan it was built from; ``choices`` and ``dtype`` come from it.
        input_dtype: what ``net`` takes (a runtime that casts itself takes float32).
        autocast: run ``net`` under autocast in ``plan.dtype`` (training).
        call_context: entered around every call (inference: ``torch.no_grad``).
        original: the model it was made from, for ``input_size`` / ``num_joints`` /
            ``heatmap_size``.
    """

    def __init__(self, net: nn.Module, plan: Plan, original: nn.Module, *, input_dtype: torch.dtype,
                 autocast: bool = False, call_context: Optional[Callable[[], ContextManager]] = None):
        super().__init__()
        self.net, self.plan = net, plan
        self.input_dtype, self.autocast = input_dtype, autocast
        self.call_context = call_context or contextlib.nullcontext
        self.input_size = getattr(original, "input_size", None)
        self.num_joints = getattr(original, "num_joints", None)
        self.heatmap_size = getattr(original, "heatmap_size", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.plan.dtype

    @property
    def choices(self):
        return self.plan.choices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.call_context():
            if self.plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.autocast:
                with torch.autocast(self.plan.device.type, dtype=self.plan.dtype):
                    return self.net(x).float()
            return self.net(x.to(self.input_dtype)).float()

    def report(self) -> str:
        return self.plan.report()

    def train_step(self, optimizer: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
                   graph: Optional[bool] = None, warmup: int = 3):
        """The whole training step of this ``mode="training"`` model, as a
        :class:`~hrfast.deploy.train_step.TrainStep` ``step(x, *targets) -> loss``: replayed
        from a CUDA graph on CUDA when the plan did not compile (``graph=None``), eager
        elsewhere. ``optimizer`` runs over the original model's parameters."""
        from .train_step import TrainStep
        if self.plan.mode != "training":
            raise ValueError("train_step needs optimize(model, mode='training')")
        if graph is None:
            graph = self.plan.device.type == "cuda" and not self.plan.compile
        return TrainStep(self, optimizer, loss_fn, graph=graph, warmup=warmup)


class CudaGraphNet(nn.Module):
    """``net`` replayed from a CUDA graph, one per input shape, dtype and layout: the first
    call of a shape warms up (Triton compiles, cuDNN picks its algorithms) and captures; each
    call copies its input into the graph's static input and replays. The output is a copy, so
    a caller may keep it across calls. Inference only (no autograd)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self._graphs = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.stride())
        if key not in self._graphs:
            static = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):
                    self.net(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                out = self.net(static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        static.copy_(x)
        graph.replay()
        return out.clone()


class RuntimeNet(nn.Module):
    """A network compiled by another inference runtime (OpenVINO, onnxruntime), as a module
    without parameters: ``runner`` maps a (N, 3, H, W) float32 tensor to float32 heatmaps."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], name: str):
        super().__init__()
        self.runner, self.name = runner, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)

    def extra_repr(self) -> str:
        return self.name
