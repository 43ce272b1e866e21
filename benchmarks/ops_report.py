"""Print the op speed-ups (hrfast vs official numpy, same run) as a Markdown table.

    python benchmarks/ops_report.py [--threads N] [--joints 17|133]
"""
import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ops_cases import SIZES, cases  # noqa: E402

from hrfast.benchmarking import measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--joints", type=int, default=17, help="joints per person (133: COCO-WholeBody)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    cpu_name = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name}, "
          f"32 persons x {args.joints} joints")
    print("| op | heatmap | hrfast (ms) | official numpy (ms) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for size in SIZES:
        for name, (fast, ref) in cases(size, args.joints).items():
            tf = measure(fast, cpu, warmup=3, iters=20, min_time=0.5)
            tr = measure(ref, cpu, warmup=1, iters=5, min_time=1.0)
            print(f"| {name} | {size} | {tf * 1e3:.3f} | {tr * 1e3:.2f} | {tr / tf:.0f}x |")


if __name__ == "__main__":
    main()
