"""A whole training step as one callable, replayed from a CUDA graph on CUDA.

``TrainStep(net, optimizer, loss_fn)`` is ``step(x, *targets) -> loss``: forward, ``loss_fn(net(x),
*targets)``, backward and ``optimizer.step()``. On CUDA the fused training unit alone launches
about 70 kernels at W32 batch 64 (benchmarks/RESULTS.md "Launches"), each paying the host's Python and
launcher cost; a CUDA graph replays the whole step (forward, loss, backward, optimizer) in one
host call. Everywhere else the same step runs eagerly.

The graph of an input signature (shapes, dtypes, strides of every argument) is made after
``warmup`` eager steps of that signature, run on a side stream so that lazy initialisation (Triton
compiles, cuDNN's algorithm choice, the optimizer's state) happens outside it. Capture records
without running, so the capturing call then replays once: every call is exactly one step on its
own batch, eager or replayed. The optimizer must be capturable (torch's fused Adam/AdamW/SGD, or
``capturable=True``); its learning rates become device tensors, which torch's LR schedulers update
in place, so a schedule keeps working across replays.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn


def capturable(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer``'s step can be recorded in a CUDA graph."""
    d = optimizer.defaults
    return bool(d.get("fused") or d.get("capturable"))


def _signature(args) -> Tuple:
    return tuple((tuple(a.shape), a.dtype, a.stride(), a.device) for a in args)


class TrainStep:
    """``step(x, *targets) -> loss`` (a 0-dim float tensor, the caller's to keep).

    Args:
        net: the network; called as ``net(x)`` in train mode.
        optimizer: over ``net``'s parameters (capturable for ``graph``).
        loss_fn: ``loss_fn(output, *targets)`` -> scalar tensor.
        graph: replay CUDA graphs (default: when the parameters are on CUDA).
        autocast: run forward and loss under autocast in this dtype (None: no autocast).
        warmup: eager steps of a signature before its graph is made.
    """

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
                 graph: Optional[bool] = None, autocast: Optional[torch.dtype] = None, warmup: int = 3):
        device = next(net.parameters()).device
        self.net, self.optimizer, self.loss_fn, self.device = net, optimizer, loss_fn, device
        self.graph = device.type == "cuda" if graph is None else bool(graph)
        if self.graph and device.type != "cuda":
            raise ValueError(f"graph=True needs the parameters on CUDA, they are on {device}")
        if self.graph and not capturable(optimizer):
            raise ValueError("a CUDA-graphed step needs a capturable optimizer: torch's fused Adam/AdamW/SGD "
                             "(hrfast.engine.optim.build_optimizer gives it) or capturable=True")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 eager step, got {warmup}")
        self.autocast, self.warmup = autocast, int(warmup)
        self._seen: Dict[Tuple, int] = {}
        self._graphs: Dict[Tuple, Tuple] = {}
        if self.graph:
            for group in optimizer.param_groups:    # a float LR would be baked into the graph
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), device=device)

    @property
    def graphs(self) -> int:
        """How many CUDA graphs have been made (one per input signature)."""
        return len(self._graphs)

    def _amp(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast, cache_enabled=False)

    def _loss(self, args) -> torch.Tensor:
        with self._amp():
            return self.loss_fn(self.net(args[0]), *args[1:]).float()

    def _eager(self, args) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(args)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if not args:
            raise ValueError("step needs the network's input (and the loss's targets)")
        self.net.train()
        if not self.graph:
            return self._eager(args)
        key = _signature(args)
        if key in self._graphs:
            graph, static, loss = self._graphs[key]
            for s, a in zip(static, args):
                s.copy_(a)
            graph.replay()
            return loss.clone()
        seen = self._seen.get(key, 0)
        if seen < self.warmup:
            self._seen[key] = seen + 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._eager(args)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        return self._capture(key, args)

    def _capture(self, key, args) -> torch.Tensor:
        static = tuple(a.clone() for a in args)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)     # the grads are allocated in the graph's pool
        with torch.cuda.graph(graph):
            loss = self._loss(static)
            loss.backward()
            self.optimizer.step()
        self._graphs[key] = (graph, static, loss)
        graph.replay()      # capture recorded the step without running it
        return loss.detach().clone()
