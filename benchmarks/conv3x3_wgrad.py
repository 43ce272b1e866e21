"""hrfast::conv3x3_wgrad against ATen's bf16 weight gradient (oneDNN) on the CPU. A report,
not a test.

Times the weight gradient of the 3x3, stride-1 convolutions of W32's branches (batch 8, the
training benchmark's) and of the demo's W18-small (batch 16), bf16 channels_last, in
interleaved rounds (:func:`hrfast.benchmarking.measure_interleaved`, medians), with GFLOP/s as
a fraction of the bf16 conv peak measured in the same run, and each result's largest error
against float64 beside oneDNN's. Results are in benchmarks/RESULTS.md.

Usage: python benchmarks/conv3x3_wgrad.py [--iters 30]
"""
import argparse

import torch

from hrfast.benchmarking import conv_peak, measure_interleaved
from hrfast.ops.conv3x3 import HAS_OP, conv3x3_wgrad, conv3x3_wgrad_ref, wgrad_pays
from hrfast.tables import markdown_table

# (label, batch, channels, height, width): W32 256x192's four branches, W18-small 128x96's four
SHAPES = [("W32", 8, 32, 64, 48), ("W32", 8, 64, 32, 24), ("W32", 8, 128, 16, 12), ("W32", 8, 256, 8, 6),
          ("W18 small", 16, 18, 32, 24), ("W18 small", 16, 36, 16, 12), ("W18 small", 16, 72, 8, 6),
          ("W18 small", 16, 144, 4, 3)]


def row(label, n, c, h, w, iters, peak):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    dy = torch.randn(n, c, h, w, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    ref64 = conv3x3_wgrad_ref(dy.double(), x.double())
    errs = [(f(dy, x).double() - ref64).abs().max().item() for f in (conv3x3_wgrad_ref, conv3x3_wgrad)]
    fns = [lambda: conv3x3_wgrad_ref(dy, x), lambda: conv3x3_wgrad(dy, x)]
    for f in fns:
        f()
    t_ref, t_ours = measure_interleaved(fns, torch.device("cpu"), iters)
    flop = 2 * n * h * w * c * c * 9
    return [label, f"{c} x {h}x{w}, batch {n}", f"{t_ref * 1e3:.3f} ({flop / t_ref / peak:.0%})",
            f"{t_ours * 1e3:.3f} ({flop / t_ours / peak:.0%})", f"{t_ref / t_ours:.2f}x",
            f"{errs[1]:.3g} / {errs[0]:.3g}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    peak = conv_peak(torch.device("cpu"), torch.bfloat16)   # FLOP/s
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native kernel: "
          f"{HAS_OP and torch.ops.hrfast.conv3x3_wgrad_native()}, installed by optimize: {wgrad_pays()}, "
          f"bf16 conv peak {peak / 1e9:.0f} GFLOP/s; ms per call (fraction of that peak), medians of "
          f"{args.iters} interleaved rounds\n")
    rows = [row(*shape, args.iters, peak) for shape in SHAPES]
    print(markdown_table(["net", "weight gradient of", "oneDNN ms", "hrfast ms", "speed-up",
                          "max error vs float64: hrfast / oneDNN"], rows))


if __name__ == "__main__":
    main()
