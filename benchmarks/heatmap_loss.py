"""The heatmap loss two ways, forward and backward: the official one (targets from the native
op, then JointsMSELoss on the maps) against ``joints_mse_loss`` (from the joints, no maps).
A report, not a test; interleaved rounds, medians.

    python benchmarks/heatmap_loss.py [--threads N] [--iters 20]
"""
import argparse
import platform

import torch

from hrfast.benchmarking import measure_interleaved
from hrfast.engine.loss import JointsMSELoss
from hrfast.ops.heatmap_loss import joints_mse_loss
from hrfast.ops.targets import gaussian_targets

# (persons, joints, input (W, H), heatmaps (W, H)): COCO W32 256x192 and COCO-WholeBody at 256x192
CASES = [(32, 17, (192, 256), (48, 64)), (32, 133, (192, 256), (48, 64)), (8, 133, (192, 256), (48, 64))]


def step_fns(B, K, image, heatmap):
    g = torch.Generator().manual_seed(0)
    joints = torch.rand(B, K, 2, generator=g) * torch.tensor(image, dtype=torch.float32)
    visible = (torch.rand(B, K, generator=g) > 0.15).float()
    pred = torch.rand(B, K, heatmap[1], heatmap[0], generator=g).requires_grad_()
    official_loss = JointsMSELoss(True)

    def official():
        target, weight = gaussian_targets(joints, visible, image, heatmap, 2.0)
        official_loss(pred, target, weight).backward()
        pred.grad = None

    def fused():
        joints_mse_loss(pred, joints, visible, image, 2.0).mean().backward()
        pred.grad = None
    return official, fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"forward + backward, median of {args.iters} interleaved rounds\n")
    print("| persons x joints | heatmap | targets + JointsMSELoss (ms) | joints_mse_loss (ms) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for B, K, image, heatmap in CASES:
        fns = step_fns(B, K, image, heatmap)
        for fn in fns:           # warm-up
            fn()
        official, fused = measure_interleaved(fns, cpu, iters=args.iters)
        print(f"| {B} x {K} | {heatmap[1]}x{heatmap[0]} | {official * 1e3:.2f} | {fused * 1e3:.2f} | "
              f"{official / fused:.1f}x |")


if __name__ == "__main__":
    main()
