"""Compile every Triton kernel of the fused exchange unit for Hopper (sm_90a) on a machine
without a GPU, and read what the compiler made of it: registers, local memory (spills),
shared memory, the matrix instructions and the width of the global loads.

How: a stand-in Triton driver reports an sm_90 target; the ops run on CPU tensors with the
GPU's choices (``hrfast.kernels.launch.offline_gpu``), and every launch only compiles (Triton's
warmup path), so the exchange unit's own code picks the kernel variants at the real W32
shapes. Triton's bundled ptxas makes the cubin and its cuobjdump reads it.

What to look for: ``HGMMA...BF16`` for bf16 GEMMs (warpgroup MMA on the tensor
cores; ``TF32`` would mean float32 operands), no ``LDL``/``STL`` (local memory: spills), and
16-byte loads (``.128``) for the NHWC activation tiles.

``--host`` prints instead what each unit's call costs the host: its Triton launches and the
median ms of the Python side and Triton's launcher (:func:`host_time`).

Usage: python benchmarks/offline_compile.py [--stages 2 3 4] [--batch 64] [--host] [--report out.md]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import subprocess
import tempfile
from typing import Dict, List

import torch

from hrfast.benchmarking import emit_report, measure

MMA = re.compile(r"\b((?:HGMMA|HMMA|DMMA)\.[\w.]+)")   # fp16 operands carry no suffix: HGMMA.64x16x16.F32
LOADS = re.compile(r"\b(LDGSTS\.E[.\w]*|LDG\.E[.\w]*)")


@contextlib.contextmanager
def offline_sm90():
    """Triton compiles for sm_90a and never launches; hrfast's ops take the GPU's choices."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    from hrfast.kernels.launch import offline_gpu

    class Offline(DriverBase):
        @classmethod
        def is_active(cls):
            return True

        def map_python_to_cpp_type(self, ty):
            return ty

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise NotImplementedError

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

    run = JITFunction.run
    JITFunction.run = lambda self, *a, grid, warmup, **k: run(self, *a, grid=grid, warmup=True, **k)
    driver.set_active(Offline())
    interp = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with offline_gpu():
            yield triton
    finally:
        JITFunction.run = run
        driver.set_active(None)   # back to the default driver, made on first use
        if interp is not None:
            os.environ["TRITON_INTERPRET"] = interp


def _tools():
    import triton
    base = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return os.path.join(base, "cuobjdump")


def inspect(kernel) -> Dict[str, object]:
    """Resources and instruction mix of one compiled kernel."""
    cuobjdump = _tools()
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    local = int(re.search(r"LOCAL:(\d+)", res).group(1))
    spills = len(re.findall(r"\b(?:LDL|STL)\b", sass))
    return dict(regs=regs, local=local, spills=spills, shared=kernel.metadata.shared,
                warps=kernel.metadata.num_warps, stages=kernel.metadata.num_stages,
                mma=dict(collections.Counter(MMA.findall(sass))), loads=dict(collections.Counter(LOADS.findall(sass))))


def _describe(kernel) -> str:
    """The constexpr values that tell one variant from another."""
    src = kernel.src
    keep = ("NS", "NT", "G", "KS", "S", "F", "STATS", "BLOCK_M", "BLOCK_N", "BLOCK_K", "AFF", "UPDATE",
            "KS0", "S0", "F0", "KS1", "F1", "KS2", "F2", "K", "META")
    names = [p.name for p in src.fn.params] if hasattr(src, "fn") else []
    vals = []
    for path, v in getattr(src, "constants", {}).items():
        if len(path) == 1 and path[0] < len(names) and names[path[0]] in keep:
            vals.append(f"{names[path[0]]}={v}")
    return " ".join(vals)


def compile_unit(channels: List[int], B: int, H: int, W: int, modes=("infer", "train")) -> List[dict]:
    """Compile the kernels one exchange unit (``channels``, branch 0 at HxW, batch B, bf16
    channels_last, fp32 parameters as under autocast) launches, per mode. Returns one row per
    compiled variant."""
    from hrfast.kernels import batchnorm as kbn
    from hrfast.kernels import branch_sum as kbs
    from hrfast.kernels import fused_gemm as kg

    kernels = [kg.fused_gemm_fwd_kernel, kg.convs_fwd_kernel, kg.conv_backward_kernel, kg.split_sum_kernel,
               kg.pack_weights_kernel, kbn.bn_finalize_many_kernel, kbs.relu_mask_kernel, kbs.sums_fwd_kernel,
               kbs.terms_reduce_kernel, kbs.terms_sum_rows_kernel, kbs.terms_bn_apply_kernel]
    rows = []
    with offline_sm90():
        for k in kernels:
            k.device_caches.clear()
        for mode in modes:
            _unit_call(channels, B, H, W, mode)()
        for k in kernels:
            for cache in k.device_caches.values():
                for compiled in cache[0].values():
                    rows.append(dict(kernel=k.fn.__name__, variant=_describe(compiled), **inspect(compiled)))
    return rows


def _unit_call(channels: List[int], B: int, H: int, W: int, mode: str):
    """One fused exchange unit's call (W32-like ``channels``, bf16 channels_last CPU tensors
    with the GPU's choices), as a function of no arguments."""
    from hrfast.models.exchange import ExchangeUnit
    from hrfast.ops.exchange import FusedExchange
    torch.manual_seed(0)
    unit = ExchangeUnit(channels, len(channels)).train(mode == "train")
    unit.fused_impl = FusedExchange()
    xs = [torch.randn(B, c, H >> j, W >> j, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
          .requires_grad_(mode == "train") for j, c in enumerate(channels)]

    def call():
        if mode == "train":
            sum(o.float().sum() for o in unit(xs)).backward()
        else:
            with torch.no_grad():
                unit(xs)
    return call


def host_time(channels: List[int], B: int, H: int, W: int, modes=("infer", "train"), iters: int = 5) -> List[dict]:
    """What one fused unit's call costs the host: its Triton launches and the median ms of the
    Python ops, the argument binding and Triton's launcher, timed with the offline driver after a
    first call that compiles. Nothing reaches a GPU, so the driver's own launch (a few us each)
    is not in it: a lower bound of the host time on the GPU. The ``sum().backward()`` of a
    training call runs real CPU reductions over the outputs and is timed on its own and taken
    out."""
    from hrfast.kernels.launch import count_launches
    rows = []
    with offline_sm90():
        for mode in modes:
            call = _unit_call(channels, B, H, W, mode)
            call()                                    # compiles
            with count_launches() as count:
                call()
            ms = _median_ms(call, iters)
            if mode == "train":                       # the loss's CPU sum is not the unit's
                outs = [torch.zeros(B, c, H >> j, W >> j, dtype=torch.bfloat16, requires_grad=True)
                        for j, c in enumerate(channels)]
                ms -= _median_ms(lambda: sum(o.float().sum() for o in outs).backward(), iters)
            rows.append(dict(stage=len(channels), mode=mode, shape=f"{B}x{H}x{W}", launches=count.n,
                             host_ms=max(ms, 0.0), us_per_launch=max(ms, 0.0) * 1e3 / max(count.n, 1)))
    return rows


def _median_ms(fn, iters: int) -> float:
    return measure(fn, torch.device("cpu"), warmup=0, iters=iters) * 1e3


def host_report(rows: List[dict], header: str) -> str:
    lines = [header, "", "| stage | mode | shape | Triton launches | host ms per call | us per launch |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['mode']} | {r['shape']} | {r['launches']} | {r['host_ms']:.2f} | "
              f"{r['us_per_launch']:.0f} |" for r in rows]
    return "\n".join(lines)


def report(rows: List[dict], header: str) -> str:
    lines = [header, "",
             "| kernel | variant | regs | spill instr. | shared KiB | warps | stages | MMA | global loads |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        mma = ", ".join(f"{k} x{v}" for k, v in r["mma"].items()) or "-"
        loads = ", ".join(f"{k} x{v}" for k, v in sorted(r["loads"].items())) or "-"
        lines.append(f"| {r['kernel']} | {r['variant']} | {r['regs']} | {r['spills']} | {r['shared'] / 1024:.0f} | "
                     f"{r['warps']} | {r['stages']} | {mma} | {loads} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[4])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--report")
    ap.add_argument("--host", action="store_true",
                    help="instead: the launches and host ms of each unit's call (offline driver, W32 shapes)")
    args = ap.parse_args(argv)
    import triton
    if args.host:   # the real shape, and batch 1 at 16x16, where the CPU tensors cost nothing
        rows = [r for stage in args.stages for shape in ((args.batch, 64, 48), (1, 16, 16))
                for r in host_time([32, 64, 128, 256][:stage], *shape)]
        return emit_report(host_report(rows, f"Host time of the fused W32 exchange units (bf16 channels_last, "
                                             f"branch 0 at HxW, batch B), offline sm_90a driver, Triton "
                                             f"{triton.__version__}. A lower bound: the driver's launches are not "
                                             f"in it. At the real shape the CPU tensors' own work (outputs, "
                                             f"autograd's casts and sums) is in it too."), args.report)
    rows = []
    for stage in args.stages:
        rows += compile_unit([32, 64, 128, 256][:stage], args.batch, 64, 48)
    text = report(rows, f"Kernels of the W32 exchange units (stages {args.stages}, batch {args.batch}, bf16 "
                        f"channels_last), compiled offline for sm_90a with Triton {triton.__version__}.")
    return emit_report(text, args.report)


if __name__ == "__main__":
    main()
