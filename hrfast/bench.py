"""Throughput measurement shared by the CLI (``hrfast bench``) and ``benchmarks/``."""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, warmup: int = 2, iters: int = 5,
            min_time: float = 0.0) -> float:
    """Median seconds per call of ``fn()`` after ``warmup`` calls (at least ``iters`` calls,
    more until ``min_time`` seconds were spent)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def inference_throughput(model: nn.Module, batch: int, input_size, device="cpu",
                         dtype: Optional[torch.dtype] = None, warmup: int = 2, iters: int = 5,
                         channels_last: bool = False) -> Dict[str, float]:
    """Images/s of ``model`` in eval mode on random (batch, 3, H, W) inputs, input_size = (W, H).

    ``dtype`` runs under autocast in that dtype (AMP); ``None`` runs in the model's dtype."""
    device = torch.device(device)
    x = torch.randn(batch, 3, input_size[1], input_size[0], device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.eval()

    def step():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            model(x)

    sec = measure(step, device, warmup, iters)
    return {"seconds_per_batch": sec, "images_per_s": batch / sec}
