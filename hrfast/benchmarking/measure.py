"""Timing on CPU or CUDA: medians of interleaved rounds, throughput and the memory one call adds."""
from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn
from tqdm import tqdm


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, warmup: int = 2, iters: int = 5,
            min_time: float = 0.0) -> float:
    """Median seconds per call of ``fn()`` after ``warmup`` calls (at least ``iters`` calls,
    more until ``min_time`` seconds were spent)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return median(times)


def median(values) -> float:
    """The middle of ``values`` (the upper one of the two middles for an even count)."""
    return sorted(values)[len(values) // 2]


def with_ratios(rows: list, key: str) -> list:
    """``rows`` with ``ratio``: each row's ``key`` over the first row's (the baseline)."""
    for r in rows:
        r["ratio"] = r[key] / rows[0][key]
    return rows


def measure_interleaved(fns, device: torch.device, iters: int = 5, progress: bool = False) -> list:
    """Median seconds per call of each of ``fns``, timed in ``iters`` interleaved rounds (one
    call of each per round; warm them up first). A machine that speeds up or slows down during
    the run then moves every callable alike, so their ratios stay put: on a shared 2-core
    machine, timing variants one after another let the baseline alone drift by 20% between
    runs."""
    times = [[] for _ in fns]
    rounds = range(iters)
    if progress:
        rounds = tqdm(rounds, desc="  timed rounds", leave=False)
    for _ in rounds:
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            t.append(time.perf_counter() - t0)
    return [median(t) for t in times]


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


def _proc_status_mib(key: str) -> float:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB."""
    text = Path("/proc/self/status").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def peak_memory_mib(fn, device) -> float:
    """Peak memory (MiB) one call of ``fn()`` adds above what is in use before it: the
    activations and workspaces, not the weights or the input.

    CUDA: the caching allocator's peak minus what was allocated before. CPU (Linux): glibc's
    free lists are handed back (``malloc_trim``) so that freed blocks of earlier work cannot
    hide the call's own allocations, the kernel's high-water mark VmHWM is reset through
    ``/proc/self/clear_refs`` and read after the call, minus the resident set before it.
    NaN where neither is available (the resident set counts pages touched, so it is exact
    up to a page per allocation)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")     # 5: reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _proc_status_mib("VmRSS")
    fn()
    return _proc_status_mib("VmHWM") - base
