"""The plan of :func:`hrfast.optimize`: every choice (runtime, dtype, layout, backend, compile)
made from the arguments and the machine, with its reason, before any work is done. Pure: it
reads the device's capabilities and which runtimes are installed, and builds nothing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from ..device import cpu_has_native_bf16
from ..extras import installed

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "int8": torch.int8}
MODES = ("inference", "training")
# what optimize(runtime=...) accepts; "int8" is not one of them: dtype="int8" selects it
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
# the CPU inference runtimes in the order "auto" prefers them, with the dtypes each runs:
# OpenVINO measured fastest on the development CPU (RESULTS.md: 1.0-1.8x the torch path)
_CPU_RUNTIMES = (("openvino", (torch.float32, torch.bfloat16, torch.int8)),)


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


@dataclass
class Plan:
    """What :func:`hrfast.optimize` will build. ``runtime`` names the module of
    ``hrfast.deploy`` that builds it: ``torch``, ``int8`` (torch with torchao's int8 graph),
    ``openvino`` or ``onnxruntime``. ``choices`` holds (what, why) pairs."""
    mode: str
    device: torch.device
    dtype: torch.dtype
    runtime: str
    compile: bool
    choices: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def channels_last(self) -> bool:
        # Inductor picks the int8 activation layout itself and prepacks the weights
        return self.runtime == "torch"

    def note(self, what: str, why: str) -> None:
        self.choices.append((what, why))

    def report(self) -> str:
        head = f"hrfast.optimize(mode={self.mode!r}) on {self.device}:"
        return "\n".join([head] + [f"- {what}: {why}" for what, why in self.choices])


def _pick_dtype(dtype: Optional[str], device: torch.device) -> Tuple[torch.dtype, str]:
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(set(DTYPES))} or None, got {dtype!r}")
        return DTYPES[dtype], "requested"
    if device.type == "cuda":
        return torch.bfloat16, "CUDA: bf16 tensor cores"
    if cpu_has_native_bf16():
        return torch.bfloat16, "CPU has native bf16 (avx512_bf16/AMX): bf16 convolutions"
    return torch.float32, "CPU without native bf16: bf16 would be emulated and slower"


def _fits(runtime: str, mode: str, device: torch.device, dt: torch.dtype) -> Optional[str]:
    """Why ``runtime`` cannot run this (an error message), or None when it can."""
    if runtime in ("openvino", "onnxruntime"):
        dtypes = dict(_CPU_RUNTIMES).get(runtime, (torch.float32,))
        if mode != "inference":
            return f"runtime={runtime!r} is for inference; training runs on torch"
        if device.type != "cpu":
            return f"runtime={runtime!r} runs on the CPU, got device {device}"
        if dt not in dtypes:
            names = [dtype_name(d).replace("float32", "fp32").replace("bfloat16", "bf16") for d in dtypes]
            names = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            return f"runtime={runtime!r} runs {names}, got dtype {dtype_name(dt)}"
    return None


def _pick_int8_runtime(runtime: str) -> Tuple[str, str]:
    """int8: OpenVINO with NNCF's quantization, when both are installed (auto) or asked for;
    else torchao's graph compiled by Inductor (``int8``)."""
    if runtime == "onnxruntime":
        raise ValueError("dtype='int8' runs on OpenVINO (NNCF) or torch (torchao), not runtime='onnxruntime'")
    if runtime == "openvino":
        return "openvino", "requested: NNCF's int8 quantization, run by OpenVINO's CPU plugin"
    if runtime == "auto" and installed("openvino") and installed("nncf"):
        return "openvino", ("auto: NNCF's int8 on OpenVINO measured 1.15x torchao's int8 graph at W32 "
                            "(benchmarks/RESULTS.md, isolated)")
    why = "requested" if runtime == "torch" else "auto: OpenVINO int8 needs pip install 'hrfast[int8-openvino]'"
    return "int8", f"{why}: torchao's quantized graph compiled by Inductor"


def _pick_runtime(runtime: str, mode: str, device: torch.device, dt: torch.dtype) -> Tuple[str, str]:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(map(repr, RUNTIMES))}, got {runtime!r}")
    if dt == torch.int8:
        return _pick_int8_runtime(runtime)
    if runtime != "auto":
        problem = _fits(runtime, mode, device, dt)
        if problem:
            raise ValueError(problem)
        return runtime, "requested"
    for name, _ in _CPU_RUNTIMES:
        if _fits(name, mode, device, dt) is None and installed(name):
            return name, "auto: the fastest runtime installed for CPU inference in this dtype"
    why = ("auto: CPU inference in fp32/bf16 would use OpenVINO (pip install 'hrfast[cpu-runtimes]')"
           if _fits("openvino", mode, device, dt) is None else "auto: the only runtime for this mode and device")
    return "torch", why


def make_plan(mode: str = "inference", dtype: Optional[str] = None, compile: bool = True,
              device="cpu", runtime: str = "auto") -> Plan:
    """The plan for :func:`hrfast.optimize` with these arguments on ``device`` (a
    ``torch.device`` or its name). Raises ``ValueError`` naming the argument that cannot be
    honoured."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    device = torch.device(device)
    dt, why_dtype = _pick_dtype(dtype, device)
    if dt == torch.int8 and (mode != "inference" or device.type != "cpu"):
        raise ValueError("dtype='int8' is for inference on the CPU (x86 oneDNN int8); "
                         "use bf16 on CUDA and for training")
    name, why_runtime = _pick_runtime(runtime, mode, device, dt)
    if name == "int8" and not compile:
        raise ValueError("dtype='int8' on torch needs compile=True: only Inductor lowers the quantized graph to int8 "
                         "kernels")
    plan = Plan(mode, device, dt, name, compile and name in ("torch", "int8"))
    plan.note(f"dtype {dtype_name(dt)}", why_dtype)
    plan.note(f"runtime {name}", why_runtime)
    return plan
