"""The fused BN + residual + ReLU against eager BN + add + ReLU, forward and backward: on the
CPU ``hrfast::bn_act`` (the native op), on CUDA ``hrfast.ops.norm_act`` (the Triton ops). A
report, not a test.

Times ``relu(bn(x) + residual)`` and ``relu(bn(x))`` with their backward, train-mode BN, bf16
channels_last, on the W32 branch shapes and the layer1 / stem shapes (batch 8 on the CPU, 64
on CUDA). On the CPU: medians of interleaved rounds (:func:`hrfast.benchmarking.measure_interleaved`);
on CUDA: CUDA-event medians (``triton.testing.do_bench``). GB/s counts the fewest bytes a
forward + backward can move (x, the residual and y forward; the output's gradient, x and the
input gradients backward), as a fraction of a 256 MiB copy timed in the same run. Results are
in benchmarks/RESULTS.md.

Usage: python benchmarks/bn_act.py [--device cpu|cuda] [--batch N] [--iters 30]
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


def time_pair(fns, device, iters: int) -> list:
    """Median seconds of each callable: interleaved rounds on the CPU, CUDA events on the GPU."""
    if device.type != "cuda":
        return measure_interleaved(fns, device, iters, progress=False)
    from triton.testing import do_bench
    return [do_bench(fn, return_mode="median") * 1e-3 for fn in fns]


def copy_gbs(device, iters: int) -> float:
    """GB/s (read + write) of a 256 MiB copy on ``device``."""
    a = torch.empty(2 ** 27, dtype=torch.bfloat16, device=device).normal_()
    b = torch.empty_like(a)
    s = time_pair([lambda: b.copy_(a)], device, iters)[0]
    return 2 * a.numel() * 2 / s / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on the CPU, 64 on CUDA")
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    if device.type == "cuda":
        from hrfast.ops.norm_act import norm_act as fused_fn
    else:
        fused_fn = bn_act
    copy_rate = copy_gbs(device, args.iters)
    rows = []
    for (c, h, w), residual in [(shape, res) for shape in SHAPES for res in (True, False)]:
        x = torch.randn(batch, c, h, w, device=device).bfloat16().contiguous(memory_format=torch.channels_last)
        r, dy = torch.randn_like(x) if residual else None, torch.randn_like(x)
        x.requires_grad_()
        bn = nn.BatchNorm2d(c).to(device)
        eager, fused = time_pair([step(bn_act_ref, bn, x, r, dy), step(fused_fn, bn, x, r, dy)], device, args.iters)
        nbytes = x.numel() * 2 * (5 + 2 * residual)
        gbs = nbytes / fused / 1e9
        rows.append([f"{c} x {h}x{w}", "yes" if residual else "no", f"{x.numel() * 2 / 2 ** 20:.1f}",
                     f"{eager * 1e3:.3f}", f"{fused * 1e3:.3f}", f"{eager / fused:.2f}x",
                     f"{gbs:.0f} ({gbs / copy_rate:.0%})"])
    name = "norm_act" if device.type == "cuda" else "bn_act"
    print(f"relu(bn(x) [+ residual]), forward + backward, bf16 channels_last, batch {batch}, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; copy {copy_rate:.0f} GB/s "
          f"in the same run\n")
    print(markdown_table(["channels x map", "residual", "MiB per tensor", "eager ms", f"{name} ms", "speed-up",
                          "GB/s (of copy)"], rows))


if __name__ == "__main__":
    main()
