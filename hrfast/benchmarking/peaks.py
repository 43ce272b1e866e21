"""The machine's measured peak (a large GEMM, a large 3x3 conv) and a row's fraction of it."""
from __future__ import annotations

import torch

from ..device import cpu_has_native_bf16
from .measure import measure


def gemm_peak(device="cpu", dtype=torch.float32, n: int = 4096, iters: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype``: the practical peak of the device. NaN for
    bf16 on a CPU without native bf16: there torch's bf16 matmul is emulated about 100x slower
    than fp32 (a 4096^3 product took 514 s on a 2-core AMD EPYC without AVX-512), which says
    nothing about the peak; the conv probe still runs."""
    device = torch.device(device)
    if device.type == "cpu" and dtype == torch.bfloat16:
        if not cpu_has_native_bf16():
            return float("nan")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = measure(lambda: a @ b, device, warmup=2, iters=iters)
    return 2.0 * n ** 3 / sec


def conv_peak(device="cpu", dtype=torch.float32, iters: int = 3) -> float:
    """FLOP/s of a large channels_last 3x3 convolution (8 x 256 x 64 x 64, 256 filters) in
    ``dtype``. On CPUs oneDNN's direct convolution can beat ``torch.matmul``; the larger of the
    two is the practical peak."""
    device = torch.device(device)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, dtype).to(memory_format=torch.channels_last)
    x = torch.randn(8, 256, 64, 64, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        sec = measure(lambda: conv(x), device, warmup=1, iters=iters)
    return 2.0 * 8 * 64 * 64 * 256 * 256 * 9 / sec


def of_peak(row: dict, peak32: float, peak16: float) -> str:
    """A row's GFLOP/s as a percentage of the peak (FLOP/s) measured in its dtype: ``peak16``
    for bf16/fp16; "n/a" where no probe measures the dtype (int8)."""
    peaks = {torch.float32: peak32, torch.bfloat16: peak16, torch.float16: peak16}
    if row["dtype"] not in peaks:
        return "n/a"
    return f"{row['gflops_per_s'] * 1e9 / peaks[row['dtype']]:.0%}"
