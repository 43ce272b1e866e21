"""What the machine can do fast: native bf16 on the CPU, CUDA."""
from __future__ import annotations

import functools
import os
import platform

import torch


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU's feature flags as /proc/cpuinfo lists them (x86 ``flags``, Arm ``Features``);
    empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (x86 avx512_bf16 or AMX, Arm bf16). There,
    oneDNN runs bf16 convolutions about twice as fast as fp32. Elsewhere bf16 is emulated and
    slower.

    ``HRFAST_CPU_BF16=0`` answers False whatever the CPU has, ``1`` True: every default then
    takes the path of that kind of CPU (the README's demo time without bf16 was taken this way,
    with ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` for eager work; RESULTS.md says
    what those two break elsewhere)."""
    override = os.environ.get("HRFAST_CPU_BF16", "").strip()
    if override in ("0", "1"):
        return override == "1"
    flags = cpu_flags()
    if platform.machine().lower() in ("x86_64", "amd64"):
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return "bf16" in flags


def fast_training_settings(device: torch.device) -> dict:
    """HRFAST config overrides for fast training on ``device``: channels_last everywhere, plus bf16
    autocast on CUDA and on CPUs with native bf16."""
    amp = "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "none"
    return {"AMP": amp, "CHANNELS_LAST": True}


def apply_cudnn_settings(cudnn) -> None:
    """The official ``CUDNN`` section (:class:`hrfast.settings.CudnnSettings`: benchmark,
    deterministic, enabled) applied to ``torch.backends.cudnn``, as the official train and test
    scripts do; on the CPU they have no effect."""
    torch.backends.cudnn.benchmark = cudnn.benchmark
    torch.backends.cudnn.deterministic = cudnn.deterministic
    torch.backends.cudnn.enabled = cudnn.enabled
