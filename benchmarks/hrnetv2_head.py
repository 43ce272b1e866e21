"""HRNetV2's head two ways, in one run: the official concatenate-then-1x1-conv, and the same
conv split per branch and run at each branch's resolution before the resize
(``HRNetLandmarks`` / ``HRNetSegmentation`` with ``low_res_head``). Eager fp32 inference of the
whole net, interleaved rounds, medians; the two compute the same function.

Usage: python benchmarks/hrnetv2_head.py [--iters 5] [--report out.md]
"""
from __future__ import annotations

import argparse
import copy

import torch

import hrfast
from hrfast.benchmarking import emit_report, machine_name, measure_interleaved
from hrfast.profile import count_macs
from hrfast.tables import markdown_table

CASES = [("face_hrnetv2_w18_wflw_256", 4, (256, 256)), ("seg_hrnetv2_w48_cityscapes_1024x512", 1, (1024, 512))]


def head_macs(model, size) -> float:
    """MACs of the head's first conv, concatenated (per image)."""
    w, h = size
    conv = getattr(model, model.head_name)[0]
    return (h // 4) * (w // 4) * conv.in_channels * conv.out_channels


def run_case(name: str, batch: int, size, iters: int) -> list:
    torch.manual_seed(0)
    concat = hrfast.build_model(name).eval()
    concat.low_res_head = False
    low = copy.deepcopy(concat)
    low.low_res_head = True
    x = torch.randn(batch, 3, size[1], size[0])
    with torch.no_grad():
        err = ((low(x) - concat(x)).abs().max() / concat(x).abs().max()).item()
        secs = measure_interleaved([lambda: concat(x), lambda: low(x)], torch.device("cpu"), iters)
    total = count_macs(concat, size)["macs"]
    return [name, batch, f"{total / 1e9:.1f}", f"{head_macs(concat, size) / total:.1%}",
            f"{batch / secs[0]:.2f}", f"{batch / secs[1]:.2f}", f"{secs[0] / secs[1]:.2f}x", f"{err:.1e}"]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--report")
    args = ap.parse_args(argv)
    rows = [run_case(name, batch, size, args.iters) for name, batch, size in CASES]
    text = "\n\n".join([
        f"HRNetV2 head, eager fp32 inference, {machine_name(torch.device('cpu'))}, torch {torch.__version__}:",
        markdown_table(["config", "batch", "GMACs / image", "head 1x1 share", "concat images/s",
                        "per-branch images/s", "speed-up", "max rel. difference"], rows)])
    return emit_report(text, args.report)


if __name__ == "__main__":
    main()
