"""``hrfast bench --compare``: every variant of one model timed in one run, as tables."""
from __future__ import annotations

import platform

import torch

from ..deploy import make_plan, optimize
from ..device import cpu_has_native_bf16
from ..models import HRNet, build_model
from ..predictor import PoseEstimator, load_image
from ..profile import count_macs
from ..samples import sample_boxes, sample_images
from ..tables import markdown_table
from .isolated import inference_job, time_isolated
from .measure import measure_interleaved, peak_memory_mib, with_ratios
from .peaks import conv_peak, gemm_peak, of_peak
from .variants import (
    TRAINING_VARIANTS,
    available_inference_variants,
    timed_variant,
    training_variant,
)


def compare_inference(config: str = "w32_256x192", batch: int = 8, device="cpu",
                      variants=None, iters: int = 5, progress: bool = True, isolate=None) -> list:
    """Inference images/s of each variant (:func:`inference_variant`; default
    :func:`available_inference_variants`) of the same randomly initialized model, in one run.

    Every variant is built and called once first (compile time, reported as ``first_call_s``),
    then timed in ``iters`` interleaved rounds; ``peak_mib`` is :func:`peak_memory_mib` of one
    call. ``isolate`` (the default on the CPU) runs each variant in a process of its own
    (:func:`~hrfast.benchmarking.isolated.time_isolated`), so that the runtimes' thread pools
    do not slow each other down; otherwise all run here (:func:`measure_interleaved`)."""
    device = torch.device(device)
    variants = variants or available_inference_variants(device)
    isolate = device.type == "cpu" if isolate is None else isolate
    if isolate and device.type != "cpu":
        raise ValueError("isolated timing is for the CPU runtimes; on CUDA every variant runs in this process")
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    flops = count_macs(model, model.input_size)["flops"] * batch
    if isolate:
        rows, secs = time_isolated([(name, inference_job, (config, batch, name)) for name in variants], iters,
                                   progress)
    else:
        rows, secs = _time_in_process(model, batch, device, variants, iters, progress)
    for r, sec in zip(rows, secs):
        r.update(images_per_s=batch / sec, ms_per_batch=sec * 1e3, gflops_per_s=flops / sec / 1e9)
    return with_ratios(rows, "images_per_s")


def _time_in_process(model, batch: int, device: torch.device, variants, iters: int, progress: bool):
    """(rows, median seconds) of ``variants`` of ``model``, all built and timed in this process."""
    w, h = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    rows, calls = [], []
    for name in variants:
        if progress:
            print(f"  {name}: build and first call ...", flush=True)
        call, info = timed_variant(model, name, device, x)
        rows.append({"variant": name, **info})
        calls.append(call)
    return rows, measure_interleaved(calls, device, iters, progress)


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
    return with_ratios(rows, "images_per_s")


PREDICT_VARIANTS = ("eager fp32", "optimize", "optimize torch")


def predict_variants(device, variants=None) -> tuple:
    """The rows of :func:`compare_predict`: the eager model, the default ``optimize`` and, where
    the default runs elsewhere (OpenVINO on the CPU), the torch path; with ``variants`` (the
    inference variants of a ``--variants`` list), those of them."""
    names = PREDICT_VARIANTS if make_plan(device=device).runtime != "torch" else PREDICT_VARIANTS[:2]
    return tuple(n for n in names if variants is None or n in variants)


def predict_job(config: str, name: str, device="cpu", method: str = "dark"):
    """Predict variant ``name`` on the four coco-mini images with their detector boxes (score >
    0.5): (the call, {"people": the boxes}). Random weights: the work does not depend on them."""
    device = torch.device(device)
    data = [(load_image(p), sample_boxes(p, "detections", 0.5)) for p in sample_images()]
    torch.manual_seed(0)
    model = HRNet.from_config(config).to(device).eval()
    net = {"eager fp32": lambda: model, "optimize": lambda: optimize(model, device=device),
           "optimize torch": lambda: optimize(model, device=device, runtime="torch")}[name]()
    est = PoseEstimator(net, device=device, method=method, input_size=model.input_size)

    def run():
        for img, boxes in data:
            est(img, boxes)
    run()                     # compiles once per number of people in an image
    return run, {"people": sum(len(b) for _, b in data), "images": len(data)}


def compare_predict(config: str = "w32_256x192", device="cpu", method: str = "dark", iters: int = 3,
                    variants=None, isolate=None) -> list:
    """End to end on the four real coco-mini images with their detector boxes: decoded image ->
    crops -> network with flip test -> decoding -> image keypoints, for each of
    :func:`predict_variants`, timed in interleaved rounds (``isolate``, the default on the CPU:
    each in its own process). Rows give people/s and images/s."""
    device = torch.device(device)
    names = predict_variants(device, variants)
    isolate = device.type == "cpu" if isolate is None else isolate
    if isolate:
        rows, secs = time_isolated([(n, predict_job, (config, n, "cpu", method)) for n in names], iters)
    else:
        built = [predict_job(config, n, device, method) for n in names]
        rows = [{"variant": n, **info} for n, (_, info) in zip(names, built)]
        secs = measure_interleaved([run for run, _ in built], device, iters)
    for r, sec in zip(rows, secs):
        r.update(people_per_s=r["people"] / sec, images_per_s=r["images"] / sec)
    return with_ratios(rows, "people_per_s")


def _mib(v: float) -> str:
    return "n/a" if v != v else f"{v:.0f}"          # NaN: not measurable here


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}"


def compare_report(config: str, batch: int, device, variants=None, iters: int = 5, train: bool = False,
                   isolate=None):
    """``hrfast bench --compare``: the peaks, then :func:`compare_inference`, with ``train``
    :func:`compare_training`, and :func:`compare_predict` (``isolate``: see
    :func:`compare_inference`), in one run, as Markdown. Returns (text, the inference rows)."""
    device = torch.device(device)
    isolate = device.type == "cpu" if isolate is None else isolate
    name = machine_name(device)
    print(f"{config}, batch {batch}, {name}, torch {torch.__version__}")
    g32, g16 = gemm_peak(device, torch.float32), gemm_peak(device, torch.bfloat16)
    c32, c16 = conv_peak(device, torch.float32), conv_peak(device, torch.bfloat16)
    # a NaN GEMM figure was not measured (emulated bf16): the conv probe is the peak then
    peak32, peak16 = (max(v for v in pair if v == v) for pair in ((g32, c32), (g16, c16)))
    rows = compare_inference(config, batch, device, variants=variants, iters=iters, isolate=isolate)
    how = "each variant in a process of its own" if isolate else "all variants in one process"
    parts = [f"Inference, {config}, batch {batch}, {name}, torch {torch.__version__}; {how}, interleaved rounds. "
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
    with torch.device("meta"):   # which kind of net, without building one a second time
        pose = isinstance(build_model(config), HRNet)
    if not pose:   # the step and predict below are the pose net's
        return "\n\n".join(parts + ["(training step and end-to-end predict: pose configs only so far)"]), rows
    if train:
        parts += [f"Training step (forward, loss, backward, Adam: torch's default step for eager fp32, "
                  f"the training engine's fused step for the others), batch {batch}:",
                  training_table(compare_training(config, batch, device, iters=iters), peak32, peak16),
                  "Training GFLOP/s count a step as 3x the forward's conv FLOPs (forward, input and "
                  "weight gradients)."]
    pred = compare_predict(config, device, iters=max(2, iters // 2), variants=variants, isolate=isolate)
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
