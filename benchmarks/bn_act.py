"""hrfast::bn_act against eager BN + add + ReLU on the CPU, forward and backward. A report,
not a test.

Times ``relu(bn(x) + residual)`` and ``relu(bn(x))`` with their backward, train-mode BN, bf16 channels_last, on the
W32 branch shapes and the layer1 / stem shapes at batch 8 (medians of interleaved rounds,
:func:`hrfast.benchmarking.measure_interleaved`). Results are in benchmarks/RESULTS.md.

Usage: python benchmarks/bn_act.py [--batch 8] [--iters 30]
"""
import argparse

import torch
from torch import nn

from hrfast.benchmarking import measure_interleaved
from hrfast.ops.bn_act import bn_act, bn_act_ref
from hrfast.tables import markdown_table

SHAPES = [(32, 64, 48), (64, 32, 24), (128, 16, 12), (256, 8, 6), (256, 64, 48), (64, 128, 96)]


def step(fn, bn, x, r, dy):
    def run():
        x.grad = None
        fn(x, bn, r).backward(dy)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    rows = []
    for (c, h, w), residual in [(shape, res) for shape in SHAPES for res in (True, False)]:
        x = torch.randn(args.batch, c, h, w).bfloat16().contiguous(memory_format=torch.channels_last)
        r, dy = torch.randn_like(x) if residual else None, torch.randn_like(x)
        x.requires_grad_()
        bn = nn.BatchNorm2d(c)
        eager, fused = measure_interleaved([step(bn_act_ref, bn, x, r, dy), step(bn_act, bn, x, r, dy)],
                                           torch.device("cpu"), args.iters, progress=False)
        mb = x.numel() * 2 / 2 ** 20
        rows.append([f"{c} x {h}x{w}", "yes" if residual else "no", f"{mb:.1f}", f"{eager * 1e3:.2f}",
                     f"{fused * 1e3:.2f}", f"{eager / fused:.2f}x"])
    print(f"relu(bn(x) [+ residual]), forward + backward, bf16 channels_last, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.iters} interleaved rounds\n")
    print(markdown_table(["channels x map", "residual", "MiB per tensor", "eager ms", "bn_act ms", "speed-up"], rows))


if __name__ == "__main__":
    main()
