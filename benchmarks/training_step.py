"""Where does the training-step speed-up come from? A report, not a test.

Times one training step (forward, MSE loss, backward, Adam) of four variants of the same
initial weights, in interleaved rounds (:func:`hrfast.bench.measure_interleaved`):
- eager fp32 with torch's default Adam (the baseline);
- eager fp32 with the training engine's fused Adam (the optimizer's share alone);
- ``optimize(mode="training", compile=False)`` with the fused Adam (what ``hrfast bench
  --compare --train`` times);
- the same compiled (``optimize``'s default; compiling takes minutes on a small CPU).

Usage: python benchmarks/training_step.py [--config w32_256x192] [--batch 8] [--iters 5] [--no-compile]
"""
import argparse

import torch

from hrfast.bench import TRAINING_VARIANTS, measure_interleaved, peak_memory_mib, training_variant
from hrfast.models import HRNet

COMPILED = "optimize(mode='training'), compiled"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="w32_256x192")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="interleaved rounds (the median is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = HRNet.from_config(args.config)
    names = list(TRAINING_VARIANTS) + ([] if args.no_compile else [COMPILED])
    steps, peaks = [], []
    for name in names:
        print(f"building {name} ...", flush=True)
        step = training_variant(model, TRAINING_VARIANTS[-1] if name == COMPILED else name, args.batch, dev,
                                compile=name == COMPILED)
        step()
        step()                                    # compiled, and Adam state exists
        peaks.append(peak_memory_mib(step, dev))
        steps.append(step)
    secs = measure_interleaved(steps, dev, args.iters, progress=True)
    print(f"\n{args.config}, batch {args.batch}, training step, {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.iters} interleaved rounds\n")
    print("| variant | images/s | vs eager fp32 | peak MiB |\n|---|---:|---:|---:|")
    for name, sec, mib in zip(names, secs, peaks):
        print(f"| {name} | {args.batch / sec:.2f} | {secs[0] / sec:.2f}x | {mib:.0f} |")


if __name__ == "__main__":
    main()
