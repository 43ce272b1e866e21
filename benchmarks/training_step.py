"""Where does the training-step speed-up come from? A report, not a test.

Times one training step (forward, MSE loss, backward, Adam) of four variants of the same
initial weights, in interleaved rounds (:func:`hrfast.benchmarking.measure_interleaved`):
- eager fp32 with torch's default Adam (the baseline);
- eager fp32 with the training engine's fused Adam (the optimizer's share alone);
- ``optimize(mode="training", compile=False)`` with the fused Adam (what ``hrfast bench
  --compare --train`` times);
- the same with eager BN + add + ReLU instead of ``hrfast::bn_act`` (the fusion's share alone);
- the same with oneDNN's 3x3 weight gradients instead of ``hrfast::conv3x3_wgrad`` (the
  kernel's share alone; the same step where ``optimize`` does not install it);
- the same compiled (``optimize``'s default; compiling takes minutes on a small CPU).

``--profile`` adds where each variant's step spends its time (``torch.profiler``, self CPU time
of the ops, grouped: convolutions, BN, elementwise, loss, optimizer, copies and casts).
``--onednn`` adds what oneDNN itself runs in one step of the optimize variant on the CPU: its
primitives by kind, propagation and implementation, with oneDNN's own times (its verbose log),
so a slow convolution shows which of oneDNN's kernels it got.

Usage: python benchmarks/training_step.py [--config w32_256x192] [--batch 8] [--iters 5] [--no-compile] [--profile]
                                         [--onednn]
"""
import argparse
import collections
import copy
import os
import sys
import tempfile

import torch

from hrfast import HRNet
from hrfast.benchmarking import (
    COMPILED_TRAINING,
    ONEDNN_WGRAD_TRAINING,
    TRAINING_VARIANTS,
    UNFUSED_BN_TRAINING,
    compare_training,
    conv_peak,
    training_table,
    training_variant,
)
from hrfast.tables import markdown_table

# op-name fragments of each group, tried in order; the rest is "other"
GROUPS = (("convolutions", ("convolution", "conv2d", "conv3x3", "mkldnn_conv", "addmm", "mm")),
          ("BN", ("batch_norm", "bn_act", "batch_stats")),   # eager's, and hrfast::bn_act's
          ("optimizer", ("adam", "optimizer", "foreach")),
          ("loss", ("mse", "joints_mse", "pow", "mean")),
          ("copies and casts", ("copy_", "to_copy", "clone", "contiguous", "_to", "cat")),
          ("elementwise", ("relu", "threshold", "add", "mul", "upsample", "clamp", "sum", "fill", "zero")))


def _group(event) -> str:
    """The group of a profiled op: everything under an optimizer step is the optimizer's (the
    default Adam's per-tensor adds and multiplies too), the rest goes by its name."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimizer"
        parent = parent.cpu_parent
    name = event.name.lower()
    return next((g for g, keys in GROUPS if any(k in name for k in keys)), "other")


def profile_groups(step, steps: int = 2) -> dict:
    """Milliseconds per step of each op group, from the profiler's self CPU times of ``steps``
    steps (after two untimed ones)."""
    from torch.profiler import ProfilerActivity, profile
    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ms = dict.fromkeys([g for g, _ in GROUPS] + ["other"], 0.0)
    for ev in prof.events():
        ms[_group(ev)] += ev.self_cpu_time_total / 1e3 / steps
    return ms


def profile_table(config: str, batch: int, device, variants) -> str:
    torch.manual_seed(0)
    model = HRNet.from_config(config)
    rows = []
    for name in variants:
        ms = profile_groups(training_variant(copy.deepcopy(model), name, batch, device))
        total = sum(ms.values())
        rows.append([name, f"{total:.0f}"] + [f"{v:.0f} ({v / total:.0%})" for v in ms.values()])
    heads = ["variant", "step ms (profiled)"] + [g for g, _ in GROUPS] + ["other"]
    return markdown_table(heads, rows)


def onednn_log(step) -> str:
    """oneDNN's verbose lines of one ``step`` (after two untimed ones). oneDNN prints them from
    C to file descriptor 1, so that descriptor goes to a file for the step."""
    step()
    step()
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile("w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                step()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return log.read()


def onednn_table(log: str) -> str:
    """The ``exec`` lines of a oneDNN verbose log summed by (kind, propagation, implementation):
    calls, ms and share of oneDNN's time. Fields of a line: onednn_verbose, v1, primitive, exec,
    engine, kind, implementation, propagation, ..., time in ms (last)."""
    calls, ms = collections.Counter(), collections.Counter()
    for line in log.splitlines():
        f = line.strip().split(",")
        if len(f) > 8 and f[0] == "onednn_verbose" and f[3] == "exec":
            key = (f[5], f[7], f[6])
            calls[key] += 1
            ms[key] += float(f[-1])
    total = sum(ms.values()) or 1.0
    rows = [[*key, str(calls[key]), f"{ms[key]:.1f}", f"{ms[key] / total:.0%}"]
            for key in sorted(ms, key=ms.get, reverse=True)]
    rows.append(["all", "", "", str(sum(calls.values())), f"{total:.1f}", "100%"])
    return markdown_table(["primitive", "propagation", "implementation", "calls", "ms", "share"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="w32_256x192")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="interleaved rounds (the median is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    ap.add_argument("--profile", action="store_true", help="also: each variant's step by op group")
    ap.add_argument("--onednn", action="store_true", help="also: oneDNN's primitives in one optimize step (CPU)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    variants = TRAINING_VARIANTS + (UNFUSED_BN_TRAINING, ONEDNN_WGRAD_TRAINING) + \
        (() if args.no_compile else (COMPILED_TRAINING,))
    rows = compare_training(args.config, args.batch, dev, args.iters, variants=variants)
    peak32, peak16 = conv_peak(dev, torch.float32), conv_peak(dev, torch.bfloat16)
    print(f"\n{args.config}, batch {args.batch}, training step, {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.iters} interleaved rounds. GFLOP/s count "
          f"a step as 3x the forward's conv FLOPs; the peak is a large 3x3 conv in the row's dtype, "
          f"measured after the rounds.\n")
    print(training_table(rows, peak32, peak16))
    if args.profile:
        print("\nWhere a step's time goes (ms per step, self CPU time of the ops, torch.profiler):\n")
        print(profile_table(args.config, args.batch, dev,
                            TRAINING_VARIANTS + (UNFUSED_BN_TRAINING, ONEDNN_WGRAD_TRAINING)))
    if args.onednn and dev.type == "cpu":
        torch.manual_seed(0)
        step = training_variant(HRNet.from_config(args.config), "optimize(mode='training')", args.batch, dev)
        print("\nWhat oneDNN runs in one optimize(mode='training') step (its verbose log; ms are oneDNN's "
              "own times):\n")
        print(onednn_table(onednn_log(step)))


if __name__ == "__main__":
    main()
