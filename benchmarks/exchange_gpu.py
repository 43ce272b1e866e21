"""The fused exchange units against eager, torch.compile and CUDA graphs: the GPU report.

Per W32 256x192 exchange unit (stages 2, 3, 4; branch 0 at 64x48), bf16 inputs in
channels_last with fp32 parameters (what bf16 autocast feeds the unit), for:
- inference (eval BN, no gradient) and a training step (train BN, forward + backward of the
  sum of the outputs, gradients of inputs and parameters);
- variants: eager (the reference forward under autocast), ``torch.compile`` (default and,
  with ``--max-autotune``, max-autotune), eager captured in a CUDA graph (inference), the fused
  path, and the fused path captured in a CUDA graph (inference).

Each row gives the median time (``triton.testing.do_bench``, CUDA events, inputs rotated over
4 sets so no call finds the previous one's data in L2), the ratio to eager, the arithmetic
rate as a fraction of the bf16 matmul peak measured in the same run, the peak memory one call
adds, the kernel launches of one call (torch.profiler; training rows: forward / forward +
backward), and the forward's relative error against a float32 run without autocast (so no
row times a wrong result; eager's own bf16 error is the yardstick). Then the per-shape
dispatch measurements: every conv of the units on the Triton GEMM against cuDNN (its BN
timed on both sides), and each output branch's upsample 1x1 convs inside the branch kernel
against low resolution first. ``--model``: the whole W32 net, eager bf16 and fp32, the fused
backend and ``hrfast.optimize`` (inference and training step), timed over 1000 ms of calls;
``--model-compile`` adds the torch.compile rows. A row whose error is over 3x eager's is
marked WRONG and quotes no speed-up.
A line per timed variant goes to stdout, and ``--report`` is rewritten after each unit, so a
call cut short by its time limit keeps what it measured.

Usage (GPU): python benchmarks/exchange_gpu.py [--batch 64] [--stages 2 3 4] [--max-autotune]
             [--report out.md]
Dry run (CPU, Triton interpreter, tiny shapes, host timers): TRITON_INTERPRET=1
             python benchmarks/exchange_gpu.py --tiny
"""
from __future__ import annotations

import argparse
import copy
import platform
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

import hrfast
from hrfast.benchmarking import emit_report
from hrfast.kernels.launch import count_launches
from hrfast.models.exchange import ExchangeUnit
from hrfast.ops.conv import conv_bn_act
from hrfast.ops.exchange import FusedExchange, _affine

W32 = [32, 64, 128, 256]
ROTATE = 4
# Set by --warm: every variant runs once and nothing is measured. The Triton and Inductor
# caches are on disk, so warm runs in parallel processes (one per stage and mode) compile
# what a timed run would otherwise compile one kernel at a time (gpu_session.sh all).
WARM = [False]


def unit_flops(channels: List[int], H: int, W: int, B: int) -> float:
    """Forward FLOPs of a unit with every output branch (2 per multiply-add): the 1x1 convs at
    low resolution and the strided 3x3 chains, as eager computes them."""
    n, total = len(channels), 0.0
    for i in range(n):
        for j in range(n):
            if j > i:   # 1x1 conv at branch j's resolution
                total += 2 * channels[j] * channels[i] * B * (H >> j) * (W >> j)
            for k in range(j, i):   # chain j -> i, step from level k to k + 1
                cout = channels[i] if k == i - 1 else channels[j]
                total += 2 * 9 * channels[j] * cout * B * (H >> (k + 1)) * (W >> (k + 1))
    return total


def unit_bytes(channels: List[int], H: int, W: int, B: int, mode: str, params: int) -> float:
    """The fewest bytes a unit's call can move: every input and output branch once in bf16 and
    the ``params`` weights once in bf16; a training call also reads the outputs' gradients and
    the inputs again (for the weight gradients), writes the inputs' gradients in bf16 and the
    weights' gradients in fp32. Intermediates (the chains' middle steps, the statistics) are
    not counted: a fused path may keep them on chip."""
    act = sum(2 * B * c * (H >> j) * (W >> j) for j, c in enumerate(channels))   # all branches, bf16
    forward = 2 * act + 2 * params
    return forward if mode == "infer" else forward + 3 * act + 4 * params


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a device copy (read + write) of 256 MiB on the GPU, 32 MiB on the CPU: the
    ceiling of the GB/s column, measured in the same run."""
    if WARM[0]:
        return float("nan")
    n = (256 if device.type == "cuda" else 32) * 2 ** 20
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = timer(device)(lambda: dst.copy_(src))
    return 2 * n / (ms * 1e-3)


def timer(device: torch.device, rep: int = 100) -> Callable:
    """Median ms of a call: CUDA events over ``rep`` ms of calls (``do_bench``) on the GPU,
    host timers in the CPU dry run."""
    if WARM[0]:
        return lambda fn: (fn(), float("nan"))[1]
    if device.type == "cuda":
        import triton.testing
        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")

    def host(fn, iters=3):
        fn()
        t = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return sorted(t)[len(t) // 2] * 1e3
    return host


def launches(fn: Callable, device: torch.device) -> str:
    """Kernels one call launches: CUDA kernels by the profiler; on the CPU, the Triton
    launches of the fused path only."""
    if WARM[0]:
        return "-"
    if device.type != "cuda":
        with count_launches() as count:
            fn()
        return f"{count.n} Triton"
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return str(sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA))


def peak_mib(fn: Callable, device: torch.device) -> float:
    if device.type != "cuda" or WARM[0]:
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def matmul_peak(device: torch.device) -> float:
    """bf16 FLOP/s of a large matmul on random data (the ceiling for the fraction column)."""
    if device.type != "cuda" or WARM[0]:
        return float("nan")
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = timer(device)(lambda: a @ a)
    return 2 * 8192 ** 3 / (ms * 1e-3)


def make_inputs(channels, B, H, W, device, dtype, grad):
    sets = []
    for _ in range(ROTATE if device.type == "cuda" else 1):
        sets.append([torch.randn(B, c, H >> j, W >> j, device=device, dtype=dtype)
                     .contiguous(memory_format=torch.channels_last).requires_grad_(grad)
                     for j, c in enumerate(channels)])
    return sets


def cuda_graph(fn: Callable, device: torch.device) -> Callable:
    """``fn`` captured once in a CUDA graph (static inputs: the rotation is inside ``fn``'s
    closure, so the graph replays one input set). Warm runs skip the capture."""
    if WARM[0]:
        return fn
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def unit_variants(channels, mode: str, device, max_autotune: bool) -> Dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    unit = ExchangeUnit(channels, len(channels)).to(device).train(mode == "train")
    fused = copy.deepcopy(unit)
    fused.fused_impl = FusedExchange()
    out = {"eager": unit, "fused": fused}
    if device.type == "cuda":
        out["compile"] = torch.compile(copy.deepcopy(unit))
        if max_autotune:
            out["compile max-autotune"] = torch.compile(copy.deepcopy(unit), mode="max-autotune-no-cudagraphs")
    return out


def bench_unit(stage: int, mode: str, B: int, H: int, W: int, device, max_autotune: bool, peak: float,
               channels=None, bandwidth: float = float("nan")) -> List[dict]:
    channels = channels or W32[:stage]
    sets = make_inputs(channels, B, H, W, device, torch.bfloat16, mode == "train")
    flops = unit_flops(channels, H, W, B) * (3 if mode == "train" else 1)
    t = timer(device)
    rows = []
    units = unit_variants(channels, mode, device, max_autotune)
    nbytes = unit_bytes(channels, H, W, B, mode, sum(p.numel() for p in units["eager"].parameters()))
    ref = reference_outputs(units["eager"], sets[0])
    for name, unit in units.items():
        k = [0]

        def call(unit=unit):
            xs = sets[k[0] % len(sets)]
            k[0] += 1
            # no autocast weight cache: a CUDA graph cannot capture it, and each weight is used once
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=True, cache_enabled=False):
                if mode == "train":
                    sum(o.float().sum() for o in unit(xs)).backward()
                else:
                    with torch.no_grad():
                        unit(xs)
        def forward_only(unit=unit):   # the forward alone: launch count (training) and parity
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=True, cache_enabled=False):
                return unit(sets[0])
        try:
            # a compiled unit in train mode would recompile for a no-grad call: its forward is
            # checked in inference rows only
            err = rel_err(forward_only(), ref) if mode == "infer" or name in ("eager", "fused") else float("nan")
            variants = [(name, call)]
            if mode == "infer" and device.type == "cuda" and not name.startswith("compile"):
                variants.append((f"{name} + CUDA graph", cuda_graph(call, device)))
        except Exception as e:   # a failing variant is a finding; the others still run
            rows.append(failed_row(stage, mode, name, e))
            continue
        for vname, fn in variants:
            try:
                ms, mib, n = measure(fn, t, device)
                if mode == "train":   # forward / forward + backward
                    n = f"{launches(forward_only, device)} / {n}"
            except Exception as e:
                rows.append(failed_row(stage, mode, vname, e))
                continue
            rows.append(dict(stage=stage, mode=mode, variant=vname, ms=ms, tflops=flops / (ms * 1e-3) / 1e12,
                             of_peak=flops / (ms * 1e-3) / peak, mib=mib, launches=n, err=err,
                             mbytes=nbytes / 1e6, of_bw=nbytes / (ms * 1e-3) / bandwidth))
            progress(rows[-1])
    base = next((r["ms"] for r in rows if r["variant"] == "eager"), float("nan"))
    for r in rows:
        r["speedup"] = base / r["ms"]
    return rows


def measure(fn: Callable, t: Callable, device: torch.device):
    """(median ms, MiB one call adds, launches of one call) of ``fn``, after a first call."""
    fn()
    return t(fn), peak_mib(fn, device), launches(fn, device)


def failed_row(stage, mode: str, variant: str, e: Exception) -> dict:
    """A variant that raised: its traceback goes to the log, and its row says why, so one
    failure costs one row of the report rather than the rest of the call."""
    traceback.print_exc()
    why = f"{type(e).__name__}: {e}".replace("|", "/").replace("\n", " ")[:100]
    print(f"  {stage} {mode} {variant}: FAILED {why}", flush=True)
    nan = float("nan")
    return dict(stage=stage, mode=mode, variant=variant, ms=nan, tflops=nan, of_peak=nan, mib=nan,
                launches=f"failed: {why}", err=nan)


def reference_outputs(module: torch.nn.Module, inputs) -> List[torch.Tensor]:
    """The forward of a unit (a list of branches) or of a model (a tensor) in float32 without
    autocast: the reference of the parity column. On a copy, so train-mode running statistics
    of the timed module stay untouched."""
    ref = copy.deepcopy(module).float()
    with torch.no_grad():
        out = ref([x.detach().float() for x in inputs] if isinstance(inputs, list) else inputs.float())
    return [o.float() for o in (out if isinstance(out, (list, tuple)) else [out])]


def rel_err(outs: List[torch.Tensor], refs: List[torch.Tensor]) -> float:
    """||out - ref|| / ||ref|| over all output branches, in float64. bf16 operands land
    between 1e-3 and 1e-2; the fused path's should be at most about twice eager's."""
    num = sum(float((o.detach().double() - r.double()).pow(2).sum()) for o, r in zip(outs, refs))
    den = sum(float(r.double().pow(2).sum()) for r in refs)
    return (num / den) ** 0.5


def progress(row: dict) -> None:
    """One line per timed variant, so a call cut short by its time limit still shows how far
    it got (the report file is rewritten after each unit too)."""
    err = row.get("err", float("nan"))
    tail = f", rel err {err:.1e}" if err == err else ""
    print(f"  {row['stage']} {row['mode']} {row['variant']}: {row['ms']:.3f} ms{tail}", flush=True)


def dispatch_rows(B: int, H: int, W: int, device) -> List[dict]:
    """Each merged conv of the W32 stage-4 unit on the Triton GEMM against cuDNN (forward,
    bf16, channels_last, BN affine epilogue on both sides), and each output branch's upsample
    1x1 convs inside the branch kernel against at low resolution first."""
    t = timer(device)
    torch.manual_seed(0)
    unit = ExchangeUnit(W32, 4).to(device).eval()
    xs = make_inputs(W32, B, H, W, device, torch.bfloat16, False)[0]
    rows = []
    with torch.no_grad():
        for j in range(3):   # the merged first convs of the chains leaving j
            steps = [unit[i][j][0] for i in range(j + 1, 4)]
            ws = [s[0].weight.to(torch.bfloat16) for s in steps]
            affs = [_affine(s[0], s[1]) for s in steps]
            tri = t(lambda: conv_bn_act(xs[j], ws, 2, affs, [False] * len(ws)))
            cat, bn = torch.cat(ws), _merged_bn(affs)
            cud = t(lambda: bn(F.conv2d(xs[j], cat, stride=2, padding=1)))
            rows.append(dict(what=f"3x3 s2 from branch {j}: {W32[j]} -> {sum(w.shape[0] for w in ws)}",
                             triton=tri, cudnn=cud))
        for j in range(1, 4):   # the merged upsample 1x1 convs of source j, at low resolution
            pairs = [(unit[i][j][0], unit[i][j][1]) for i in range(j)]
            ws = [c.weight.to(torch.bfloat16) for c, _ in pairs]
            affs = [_affine(c, bn) for c, bn in pairs]
            tri = t(lambda: conv_bn_act(xs[j], ws, 1, affs, [False] * len(ws)))
            cat, bn = torch.cat(ws), _merged_bn(affs)
            cud = t(lambda: bn(F.conv2d(xs[j], cat)))
            rows.append(dict(what=f"1x1 from branch {j}: {W32[j]} -> {sum(w.shape[0] for w in ws)}",
                             triton=tri, cudnn=cud))
        for upsample in ("in_kernel", "low_res"):
            impl = FusedExchange(upsample=upsample)
            rows.append(dict(what=f"stage-4 unit, inference, upsample {upsample}",
                             triton=t(lambda: impl(unit, xs)), cudnn=float("nan")))
    return rows


def _merged_bn(affs) -> Callable:
    """The groups' eval-mode BatchNorms as one call on the merged conv's output: the cuDNN
    side pays for the BN the Triton GEMM applies in its epilogue."""
    cat = [torch.cat([getattr(a, k) for a in affs]) for k in ("mean", "var", "weight", "bias")]
    return lambda z: F.batch_norm(z, *cat[:2], *cat[2:], False, 0.0, affs[0].eps)


def _model_net(base: torch.nn.Module, name: str, mode: str, device):
    """(the net a row calls, the parameters its optimizer steps, whether the call runs under
    bf16 autocast) for variant ``name``, on a copy of ``base`` in ``mode``'s BN mode."""
    net = copy.deepcopy(base).train(mode == "train")
    if name == "eager fp32":
        return net, net.parameters(), False
    if name == "optimize":   # hrfast.optimize picks its dtype and runs its own autocast;
        # compile=False: CUDA graphs over the fused units for inference, no minutes of Inductor
        return (hrfast.optimize(net, mode="training" if mode == "train" else "inference", device=device,
                                compile=False), net.parameters(), False)
    if "fused" in name:
        net.set_backend("triton")
    return (torch.compile(net) if "compile" in name else net), net.parameters(), True


def _model_call(net: torch.nn.Module, params, amp: bool, mode: str, xs: List[torch.Tensor], device) -> Callable:
    """One inference (no gradient) or one training step (MSE to zero targets, backward, fused
    Adam over ``params``), under bf16 autocast when ``amp``, on the next input set of the
    rotation."""
    from hrfast.engine.optim import build_optimizer
    opt = build_optimizer(params, "adam", lr=1e-3) if mode == "train" else None
    k = [0]
    if opt is not None and hasattr(net, "train_step"):   # optimize's whole step (a CUDA graph on CUDA)
        return _primed(net.train_step(opt, _zero_target_loss, warmup=1), xs)

    def call():
        x = xs[k[0] % len(xs)]
        k[0] += 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            if opt is None:
                with torch.no_grad():
                    net(x)
                return
            loss = net(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return call


def _zero_target_loss(out: torch.Tensor) -> torch.Tensor:
    return out.float().pow(2).mean()


def _primed(step, xs: List[torch.Tensor]) -> Callable:
    """A TrainStep's call on the rotation of inputs, after its eager warm-up step and its
    capture, so that the timed calls are replays."""
    k = [0]

    def call():
        step(xs[k[0] % len(xs)])
        k[0] += 1
    call()
    call()
    return call


def _graphed_train_call(net: torch.nn.Module, amp: bool, xs: List[torch.Tensor]) -> Callable:
    """The training step of ``net`` (fused Adam, bf16 autocast when ``amp``) replayed from one
    CUDA graph (hrfast.deploy.TrainStep)."""
    from hrfast.deploy import TrainStep
    from hrfast.engine.optim import build_optimizer
    step = TrainStep(net, build_optimizer(net.parameters(), "adam", lr=1e-3), _zero_target_loss, graph=True,
                     autocast=torch.bfloat16 if amp else None, warmup=1)
    return _primed(step, xs)


MODEL_VARIANTS = ("eager", "eager fp32", "fused", "optimize")


def bench_model(B: int, device, tiny: bool, peak: float, rows: List[dict], save: Callable[[], None],
                modes=("infer", "train"), compile_rows: bool = False, variants=MODEL_VARIANTS) -> None:
    """Whole W32 256x192: inference and a training step (``_model_call``), bf16 autocast,
    channels_last, eager against the fused backend (each alone and in a CUDA graph: the
    inference call, or the whole training step through hrfast.deploy.TrainStep) and
    torch.compile of each. The compiled variants come last: they take minutes to compile,
    and a call cut short keeps the rest."""
    from hrfast import HRNet
    cfg = "w18_small_128x96" if tiny else "w32_256x192"
    torch.manual_seed(0)
    base = HRNet.from_config(cfg).to(device, memory_format=torch.channels_last)
    w, h = base.input_size
    xs = [torch.randn(B, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
          for _ in range(ROTATE if device.type == "cuda" else 1)]
    flops = _model_flops(base, xs[0])
    t = timer(device, rep=1000)   # a whole-model step is milliseconds: a second of calls for a stable median
    ref = reference_outputs(base.eval(), xs[0])
    names = list(variants) + (["compile", "fused + compile"] if device.type == "cuda" and compile_rows else [])
    for name, mode in [(n, m) for n in names for m in modes]:
        try:
            net, params, amp = _model_net(base, name, mode, device)
            call = _model_call(net, params, amp, mode, xs, device)
            err = float("nan")
            if mode == "infer":   # the heatmaps against float32 eager, on the first input set
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp,
                                                     cache_enabled=False):
                    err = rel_err([net(xs[0])], ref)
            variants = [(name, call)]
            if device.type == "cuda" and "compile" not in name and name != "optimize":
                variants.append((f"{name} + CUDA graph", cuda_graph(call, device) if mode == "infer"
                                 else _graphed_train_call(net, amp, xs)))
        except Exception as e:   # a failing variant is a finding; the others still run
            rows.append(failed_row("model", mode, name, e))
            save()
            continue
        for vname, fn in variants:
            try:
                ms, mib, n = measure(fn, t, device)
            except Exception as e:
                rows.append(failed_row("model", mode, vname, e))
                save()
                continue
            f = flops * (3 if mode == "train" else 1)
            base_ms = next((r["ms"] for r in rows if r["stage"] == "model" and r["mode"] == mode
                            and r["variant"] == "eager"), ms)
            rows.append(dict(stage="model", mode=mode, variant=vname, ms=ms, tflops=f / (ms * 1e-3) / 1e12,
                             of_peak=f / (ms * 1e-3) / peak, mib=mib, launches=n, err=err, speedup=base_ms / ms))
            progress(rows[-1])
            save()


def _model_flops(model, x) -> float:
    """Conv FLOPs of one forward (2 per multiply-add), counted with hooks."""
    total = [0.0]

    def hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] / m.groups
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(x[:1])
    for h in hs:
        h.remove()
    return total[0] * x.shape[0]


def versions(device) -> str:
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'unknown'})"
    drv = ""
    if device.type == "cuda":
        try:
            import subprocess
            drv = ", driver " + subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                              capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return (f"{dev}{drv}; python {platform.python_version()}, torch {torch.__version__}, triton {tv}, "
            f"hrfast {hrfast.__version__}")


def report(unit_rows, disp_rows, header: str) -> str:
    lines = [header, "", "| stage | mode | variant | ms | vs eager | TFLOP/s | of bf16 peak | min MB | GB/s (of copy) "
             "| +MiB | launches | rel err vs fp32 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    eager_err = {(r["stage"], r["mode"]): r.get("err", float("nan")) for r in unit_rows if r["variant"] == "eager"}
    for r in unit_rows:
        err = r.get("err", float("nan"))
        wrong = is_wrong(err, eager_err.get((r["stage"], r["mode"]), float("nan")))
        lines.append(f"| {r['stage']} | {r['mode']} | {r['variant']} | {r['ms']:.3f} | "
                     f"{'WRONG' if wrong else _ratio(r)} | {r['tflops']:.1f} | {r['of_peak']:.0%} | {_bytes(r)} | "
                     f"{r['mib']:.0f} | {r['launches']} | {f'{err:.1e}' if err == err else '-'}"
                     f"{' WRONG' if wrong else ''} |")
    if disp_rows:
        lines += ["", "| conv or plan | Triton ms | cuDNN ms | faster |", "|---|---:|---:|---|"]
        for r in disp_rows:
            faster = "-" if r["cudnn"] != r["cudnn"] else ("Triton" if r["triton"] < r["cudnn"] else "cuDNN")
            lines.append(f"| {r['what']} | {r['triton']:.3f} | {r['cudnn']:.3f} | {faster} |")
    return "\n".join(lines)


def _bytes(row: dict) -> str:
    """The min MB and GB/s (of the copy's) cells; '-' for rows without a byte count (the model)."""
    mb, of_bw = row.get("mbytes", float("nan")), row.get("of_bw", float("nan"))
    if mb != mb:
        return "- | -"
    gbs = mb / 1e3 / (row["ms"] * 1e-3)
    return f"{mb:.1f} | {gbs:.0f}" + (f" ({of_bw:.0%})" if of_bw == of_bw else "")


def is_wrong(err: float, eager_err: float) -> bool:
    """A row whose error against float32 is over 3x eager's (in the same dtype) computes
    something else: it is marked WRONG and no speed-up is quoted for it."""
    return err == err and eager_err == eager_err and err > 3 * max(eager_err, 1e-7)


def _ratio(row: dict) -> str:
    """vs eager; a row saved before its eager baseline was timed has none yet."""
    return f"{row['speedup']:.2f}x" if "speedup" in row else "-"


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--stages", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    ap.add_argument("--max-autotune", action="store_true", help="add torch.compile(mode='max-autotune-no-cudagraphs')")
    ap.add_argument("--no-dispatch", action="store_true", help="skip the per-shape dispatch measurements")
    ap.add_argument("--model", action="store_true", help="also the whole model: inference and training step")
    ap.add_argument("--no-units", action="store_true", help="leave out the per-unit rows (with --model)")
    ap.add_argument("--model-variants", default=",".join(MODEL_VARIANTS),
                    help=f"with --model: which of {', '.join(MODEL_VARIANTS)} (default: all)")
    ap.add_argument("--model-compile", action="store_true",
                    help="with --model: also torch.compile of eager and fused (minutes of compiling)")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: tiny shapes in the Triton interpreter")
    ap.add_argument("--report", help="also write the Markdown report here")
    ap.add_argument("--warm", action="store_true", help="run every variant once to fill the compile caches; no timing")
    args = ap.parse_args(argv)
    WARM[0] = args.warm
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    B, H, W = (1, 16, 8) if args.tiny else (args.batch, 64, 48)
    peak, bandwidth = matmul_peak(device), copy_bandwidth(device)
    header = (f"Exchange units of W32 256x192 (branch 0 at {H}x{W}), batch {B}, bf16 channels_last, "
              f"{versions(device)}. bf16 matmul peak {peak / 1e12:.0f} TFLOP/s (8192^3), copy "
              f"{bandwidth / 1e9:.0f} GB/s (read + write), both in the same run. min MB: the fewest bytes a "
              f"unit's call can move (inputs, outputs and weights once; training adds the gradients).")
    print(header, flush=True)
    rows: List[dict] = []
    disp: List[dict] = []

    def save() -> None:   # after each unit: a call cut short keeps what it measured
        if args.report:
            Path(args.report).write_text(report(rows, disp, header + " (partial)") + "\n")
    for stage in ([] if args.no_units else args.stages):
        for mode in args.modes:
            rows += bench_unit(stage, mode, B, H, W, device, args.max_autotune, peak,
                               channels=[4, 8, 16, 32][:stage] if args.tiny else None, bandwidth=bandwidth)
            save()
        if stage == 4 and not (args.no_dispatch or args.tiny):   # the dispatch table's shapes
            try:
                disp += dispatch_rows(B, H, W, device)
            except Exception:   # the units' rows stand; the log has the cause
                traceback.print_exc()
            save()
    if args.model:
        bench_model(B, device, args.tiny, peak, rows, save, args.modes, args.model_compile,
                    [v.strip() for v in args.model_variants.split(",")])
    text = emit_report(report(rows, disp, header), args.report)
    if args.warm:
        print("WARM DONE", flush=True)   # gpu_session.sh tells a finished warm run from a killed one
    return text


if __name__ == "__main__":
    main()
