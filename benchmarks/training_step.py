"""Where does the training-step speed-up come from? A report, not a test.

Times one training step (forward, MSE loss, backward, Adam) of four variants of the same
initial weights, in interleaved rounds (:func:`hrfast.benchmarking.measure_interleaved`):
- eager fp32 with torch's default Adam (the baseline);
- eager fp32 with the training engine's fused Adam (the optimizer's share alone);
- ``optimize(mode="training", compile=False)`` with the fused Adam (what ``hrfast bench
  --compare --train`` times);
- the same compiled (``optimize``'s default; compiling takes minutes on a small CPU).

Usage: python benchmarks/training_step.py [--config w32_256x192] [--batch 8] [--iters 5] [--no-compile]
"""
import argparse

import torch

from hrfast.benchmarking import COMPILED_TRAINING, TRAINING_VARIANTS, compare_training, conv_peak, training_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="w32_256x192")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="interleaved rounds (the median is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    args = ap.parse_args()
    dev = torch.device(args.device)
    variants = TRAINING_VARIANTS + (() if args.no_compile else (COMPILED_TRAINING,))
    rows = compare_training(args.config, args.batch, dev, args.iters, variants=variants)
    peak32, peak16 = conv_peak(dev, torch.float32), conv_peak(dev, torch.bfloat16)
    print(f"\n{args.config}, batch {args.batch}, training step, {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.iters} interleaved rounds. GFLOP/s count "
          f"a step as 3x the forward's conv FLOPs; the peak is a large 3x3 conv in the row's dtype, "
          f"measured after the rounds.\n")
    print(training_table(rows, peak32, peak16))


if __name__ == "__main__":
    main()
