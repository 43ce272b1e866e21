"""Throughput measurement shared by the CLI (``hrfast bench``) and ``benchmarks/``."""
from __future__ import annotations

import copy
import ctypes
import importlib.util
import platform
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import nn
from tqdm import tqdm

from .deploy import make_plan, optimize
from .device import cpu_has_native_bf16
from .engine.optim import build_optimizer
from .extras import require
from .models import HRNet
from .outputs import atomic_path, write_text
from .predictor import PoseEstimator, load_image
from .profile import count_macs
from .samples import sample_boxes, sample_images
from .tables import markdown_table


def emit_report(text: str, path=None) -> str:
    """Print a Markdown report and, with ``path``, write it there too."""
    print(text)
    if path:
        write_text(path, text + "\n")
    return text


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


def _with_ratios(rows: list, key: str) -> list:
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
            _sync(device)
            t.append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


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


# "optimize" is the default call, whose runtime "auto" picks; the torch rows pin the torch
# path (on CUDA and where no other runtime is installed they are the default's plan)
INFERENCE_VARIANTS = ("eager fp32", "eager AMP", "torch.compile", "optimize torch fp32", "optimize torch", "optimize")
# CPU-only variants and the package each needs
CPU_VARIANTS = {"optimize int8": "torchao", "onnxruntime fp32": "onnxruntime",
                "openvino fp32": "openvino", "openvino bf16": "openvino"}


def available_inference_variants(device) -> tuple:
    """INFERENCE_VARIANTS, less "optimize torch" where the default plan is that one, plus on
    the CPU: "optimize int8" when torchao is installed, "onnxruntime fp32" when onnxruntime
    is, and "openvino fp32" / "openvino bf16" (bf16 on CPUs with native bf16) when openvino
    is. The last three are the ONNX export of the same weights, run by another CPU runtime."""
    device = torch.device(device)
    names = INFERENCE_VARIANTS
    if make_plan(device=device).runtime == "torch":
        names = tuple(n for n in names if n != "optimize torch")
    if device.type != "cpu":
        return names
    extra = [name for name, module in CPU_VARIANTS.items() if importlib.util.find_spec(module) is not None
             and (name != "openvino bf16" or cpu_has_native_bf16())]   # else the plugin runs f32
    return names + tuple(extra)


def inference_variant(model: nn.Module, name: str, device) -> Callable:
    """The callable that ``name`` (one of INFERENCE_VARIANTS) times for ``model`` on ``device``.

    eager fp32: the reference model; eager AMP: the same under bf16 autocast; torch.compile:
    ``torch.compile`` of the reference; optimize torch fp32 / optimize torch: :func:`hrfast.optimize`
    on the torch runtime with dtype fp32 / its own dtype choice; optimize: the default call;
    optimize int8: ``optimize(dtype="int8")`` calibrated on random crops (CPU only);
    onnxruntime fp32 / openvino fp32 / openvino bf16: ``optimize(dtype=..., runtime=...)``,
    the ONNX export run by that CPU runtime at that precision; the last three CPU only, see
    :func:`available_inference_variants`."""
    device = torch.device(device)
    if name == "eager fp32":
        return model
    if name == "eager AMP":
        def amp(t):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return model(t)
        return amp
    if name == "torch.compile":
        return torch.compile(model)
    if name == "optimize torch fp32":
        return optimize(model, dtype="fp32", device=device, runtime="torch")
    if name == "optimize torch":
        return optimize(model, device=device, runtime="torch")
    if name == "optimize":
        return optimize(model, device=device)
    if name == "optimize int8":
        # calibrated on random crops: the speed does not depend on the observed ranges (for
        # accuracy, calibrate on real crops, as RESULTS.md does)
        w, h = getattr(model, "input_size", (192, 256))
        gen = torch.Generator().manual_seed(0)
        calibration = [torch.randn(4, 3, h, w, generator=gen) for _ in range(2)]
        return optimize(model, dtype="int8", device=device, calibration=calibration)
    if name in CPU_VARIANTS and device.type != "cpu":
        raise ValueError(f"the {name} variant runs on the CPU only")
    if name in ("onnxruntime fp32", "openvino fp32", "openvino bf16"):
        runtime, dtype = name.split()
        return optimize(model, dtype=dtype, device=device, runtime=runtime)
    raise ValueError(f"unknown variant {name!r}; choose from {INFERENCE_VARIANTS + tuple(CPU_VARIANTS)}")


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
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")     # 5: reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _proc_status_mib("VmRSS")
    fn()
    return _proc_status_mib("VmHWM") - base


def compare_inference(config: str = "w32_256x192", batch: int = 8, device="cpu",
                      variants=None, iters: int = 5, progress: bool = True) -> list:
    """Inference images/s of each variant (:func:`inference_variant`; default
    :func:`available_inference_variants`) of the same randomly initialized model, in one run.

    Every variant is built and called once first (compile time, reported as ``first_call_s``),
    then timed in ``iters`` interleaved rounds (:func:`measure_interleaved`); ``peak_mib`` is
    :func:`peak_memory_mib` of one call."""
    device = torch.device(device)
    variants = variants or available_inference_variants(device)
    torch.manual_seed(0)
    model = HRNet.from_config(config).to(device).eval()
    w, h = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    flops = count_macs(model, model.input_size)["flops"] * batch
    rows, fns = [], []
    with torch.no_grad():
        for name in variants:
            if progress:
                print(f"  {name}: build and first call ...", flush=True)
            fn = inference_variant(model, name, device)
            t0 = time.perf_counter()
            fn(x)                                   # compile / first call, not timed
            _sync(device)
            setup = time.perf_counter() - t0
            fn(x)                                   # warm-up
            # the dtype the convolutions run in, for the fraction of peak
            dtype = torch.bfloat16 if name == "eager AMP" else getattr(fn, "dtype", torch.float32)
            rows.append({"variant": name, "dtype": dtype, "first_call_s": setup,
                         "peak_mib": peak_memory_mib(lambda: fn(x), device)})
            fns.append(fn)
        secs = measure_interleaved([lambda fn=fn: fn(x) for fn in fns], device, iters, progress)
    for r, sec in zip(rows, secs):
        r.update(images_per_s=batch / sec, ms_per_batch=sec * 1e3, gflops_per_s=flops / sec / 1e9)
    return _with_ratios(rows, "images_per_s")


# the middle row isolates the optimizer: torch's default Adam loops over the 878 parameter
# tensors of W32 one by one on the CPU; hrfast's engine steps with the fused kernel.
# "optimize(mode='training')" runs uncompiled (compiling the step takes minutes on a small
# CPU and gained 0-3% there); COMPILED_TRAINING is optimize's default, timed on request.
TRAINING_VARIANTS = ("eager fp32", "eager fp32, fused Adam", "optimize(mode='training')")
COMPILED_TRAINING = "optimize(mode='training'), compiled"


def training_variant(model: nn.Module, name: str, batch: int, device) -> Callable:
    """One training step (forward, MSE loss against random targets, backward, Adam at 1e-3) of
    ``name`` (one of TRAINING_VARIANTS or COMPILED_TRAINING) on a batch of random (batch, 3, H,
    W) inputs, as a callable with attributes ``dtype`` (the convolutions') and ``optimizer``.
    "eager fp32" steps with torch's default Adam; the others with the optimizer of hrfast's
    training engine (:func:`~hrfast.engine.optim.build_optimizer`, fused). It trains a copy of
    ``model``, so variants built from one model start from the same weights and do not disturb
    each other."""
    known = TRAINING_VARIANTS + (COMPILED_TRAINING,)
    if name not in known:
        raise ValueError(f"unknown training variant {name!r}; choose from {known}")
    device = torch.device(device)
    model = copy.deepcopy(model).to(device)
    net = model.train() if name.startswith("eager") else \
        optimize(model, mode="training", compile=name == COMPILED_TRAINING, device=device)
    opt = (torch.optim.Adam(model.parameters(), 1e-3) if name == "eager fp32"
           else build_optimizer(model.parameters(), "adam", 1e-3))
    w, h = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    target = torch.rand(batch, model.num_joints, h // 4, w // 4, device=device) * 0.1

    def step():
        loss = ((net(x).float() - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step.dtype = getattr(net, "dtype", torch.float32)   # the convolutions' dtype, for the fraction of peak
    step.optimizer = opt
    return step


def compare_training(config: str = "w32_256x192", batch: int = 8, device="cpu", iters: int = 3,
                     variants=TRAINING_VARIANTS, progress: bool = True) -> list:
    """Training-step images/s of each of ``variants`` (:func:`training_variant`; the first is
    the baseline of the ratios) of the same initial weights, timed in interleaved rounds;
    ``peak_mib`` is the memory one step adds (activations kept for backward, gradients; Adam
    state exists by then).
    ``gflops_per_s`` counts a step as 3x the forward's conv FLOPs (forward, input gradient,
    weight gradient; the stem's input gradient, 0.3% of W32's, is not computed)."""
    torch.manual_seed(0)
    model = HRNet.from_config(config)
    flops = 3 * count_macs(model, model.input_size)["flops"] * batch
    rows, steps = [], []
    for name in variants:
        step = training_variant(model, name, batch, device)
        if progress:
            print(f"  training {name}: first steps ...", flush=True)
        step()
        step()                                    # Adam state exists from here on
        rows.append({"variant": name, "dtype": step.dtype, "peak_mib": peak_memory_mib(step, device)})
        steps.append(step)
    for r, sec in zip(rows, measure_interleaved(steps, torch.device(device), iters, progress)):
        r.update(images_per_s=batch / sec, ms_per_step=sec * 1e3, gflops_per_s=flops / sec / 1e9)
    return _with_ratios(rows, "images_per_s")


def of_peak(row: dict, peak32: float, peak16: float) -> str:
    """A row's GFLOP/s as a percentage of the peak (FLOP/s) measured in its dtype: ``peak16``
    for bf16/fp16; "n/a" where no probe measures the dtype (int8)."""
    peaks = {torch.float32: peak32, torch.bfloat16: peak16, torch.float16: peak16}
    if row["dtype"] not in peaks:
        return "n/a"
    return f"{row['gflops_per_s'] * 1e9 / peaks[row['dtype']]:.0%}"


def bar_chart(rows: list, path, title: str) -> None:
    """Ratios of ``rows`` (dicts with 'variant' and 'ratio') as a PNG bar chart."""
    matplotlib = require("matplotlib", "the --png chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["variant"] for r in rows]
    vals = [r["ratio"] for r in rows]
    bars = ax.barh(names[::-1], vals[::-1], color="#3b7dd8")
    for b, v in zip(bars, vals[::-1]):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.2f}x", va="center")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("throughput vs eager fp32 (same run)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(vals) * 1.25)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def compare_predict(config: str = "w32_256x192", device="cpu", method: str = "dark", iters: int = 3) -> list:
    """End to end on the four real coco-mini images with their detector boxes (score > 0.5):
    decoded image -> crops -> network with flip test -> decoding -> image keypoints, for the
    eager model, ``optimize`` and, on the CPU with openvino installed,
    ``optimize(runtime="openvino")``, timed in interleaved rounds. Rows give people/s and images/s
    (random weights: the work does not depend on them)."""

    data = [(load_image(p), sample_boxes(p, "detections", 0.5)) for p in sample_images()]
    device = torch.device(device)
    torch.manual_seed(0)
    model = HRNet.from_config(config).to(device).eval()
    nets = {"eager fp32": model, "optimize": optimize(model, device=device)}
    if make_plan(device=device).runtime != "torch":       # the default runs elsewhere: torch's row too
        nets["optimize(runtime='torch')"] = optimize(model, device=device, runtime="torch")
    runs = []
    for net in nets.values():
        est = PoseEstimator(net, device=device, method=method, input_size=model.input_size)

        def run(est=est):
            for img, boxes in data:
                est(img, boxes)
        run()                     # compiles once per number of people in an image
        runs.append(run)
    people = sum(len(b) for _, b in data)
    rows = [{"variant": name, "people": people, "people_per_s": people / sec, "images_per_s": len(data) / sec}
            for name, sec in zip(nets, measure_interleaved(runs, device, iters))]
    return _with_ratios(rows, "people_per_s")


def _mib(v: float) -> str:
    return "n/a" if v != v else f"{v:.0f}"          # NaN: not measurable here


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}"


def compare_report(config: str, batch: int, device, variants=None, iters: int = 5, train: bool = False):
    """``hrfast bench --compare``: the peaks, then :func:`compare_inference`, with ``train``
    :func:`compare_training`, and :func:`compare_predict`, in one run, as Markdown. Returns
    (text, the inference rows)."""
    device = torch.device(device)
    name = machine_name(device)
    print(f"{config}, batch {batch}, {name}, torch {torch.__version__}")
    g32, g16 = gemm_peak(device, torch.float32), gemm_peak(device, torch.bfloat16)
    c32, c16 = conv_peak(device, torch.float32), conv_peak(device, torch.bfloat16)
    # a NaN GEMM figure was not measured (emulated bf16): the conv probe is the peak then
    peak32, peak16 = (max(v for v in pair if v == v) for pair in ((g32, c32), (g16, c16)))
    rows = compare_inference(config, batch, device, variants=variants, iters=iters)
    parts = [f"Inference, {config}, batch {batch}, {name}, torch {torch.__version__}. "
             f"Peak in this run: 4096^3 GEMM {g32 / 1e9:.0f} GFLOP/s fp32 / {g16 / 1e9:.0f} bf16, large 3x3 conv "
             f"{c32 / 1e9:.0f} fp32 / {c16 / 1e9:.0f} bf16; the larger is the peak below.",
             markdown_table(["variant", "images/s", "vs eager fp32", "GFLOP/s", "of the peak in its dtype",
                             "first call (s)", "peak MiB"],
                            [[r["variant"], f"{r['images_per_s']:.1f}", f"{r['ratio']:.2f}x",
                              f"{r['gflops_per_s']:.0f}", of_peak(r, peak32, peak16), f"{r['first_call_s']:.1f}",
                              _mib(r["peak_mib"])]
                             for r in rows]),
             "Peak MiB: memory one call adds above the weights and the input (activations and "
             "workspaces; CPU: resident-set high-water mark, CUDA: allocator peak)."]
    if train:
        parts += [f"Training step (forward, loss, backward, Adam: torch's default step for eager fp32, "
                  f"the training engine's fused step for the others), batch {batch}:",
                  training_table(compare_training(config, batch, device, iters=iters), peak32, peak16),
                  "Training GFLOP/s count a step as 3x the forward's conv FLOPs (forward, input and "
                  "weight gradients)."]
    pred = compare_predict(config, device, iters=max(2, iters // 2))
    parts += [f"End-to-end predict (coco-mini: 4 real images, {pred[0]['people']} detector boxes, flip test, "
              "DARK decoding, from decoded image to image keypoints):",
              markdown_table(["variant", "people/s", "images/s", "vs eager"],
                             [[r["variant"], f"{r['people_per_s']:.1f}", f"{r['images_per_s']:.2f}",
                               f"{r['ratio']:.2f}x"] for r in pred])]
    return "\n\n".join(parts), rows


def training_table(rows: list, peak32: float, peak16: float) -> str:
    """The rows of :func:`compare_training` as Markdown."""
    return markdown_table(["variant", "images/s", "vs eager fp32", "GFLOP/s", "of the peak in its dtype", "peak MiB"],
                          [[r["variant"], f"{r['images_per_s']:.2f}", f"{r['ratio']:.2f}x", f"{r['gflops_per_s']:.0f}",
                            of_peak(r, peak32, peak16), _mib(r["peak_mib"])] for r in rows])
