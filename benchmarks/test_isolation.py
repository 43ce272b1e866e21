"""The comparison table must not disturb what it measures: each CPU runtime's speed in
``hrfast bench --compare``'s table (every variant in its own process, interleaved rounds) is
within 20% of its speed when it runs alone.

A benchmark, not a unit test: it asserts speeds, so it runs with ``make bench`` (``pytest
benchmarks``), never in ``make test``. In one process the same table put OpenVINO bf16 at
32.5 images/s against about 100 alone (the issue of 2026-12-03). HRFAST_BENCH_CONFIG and
HRFAST_ISOLATION_BATCH pick the workload (default: W32 256x192, batch 8).
"""
import importlib.util
import os

import pytest
import torch

from hrfast.benchmarking.isolated import inference_job, time_isolated
from hrfast.device import cpu_has_native_bf16

CONFIG = os.environ.get("HRFAST_BENCH_CONFIG", "w32_256x192")
BATCH = int(os.environ.get("HRFAST_ISOLATION_BATCH", "8"))
ROUNDS = 7


def runtimes() -> tuple:
    """eager torch, the torch path of optimize, and the other CPU runtimes installed."""
    names = ["eager fp32", "optimize torch"]
    if importlib.util.find_spec("openvino"):
        names.append("openvino bf16" if cpu_has_native_bf16() else "openvino fp32")
    if importlib.util.find_spec("onnxruntime"):
        names.append("onnxruntime fp32")
    return tuple(names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU runtimes' thread pools are what is measured")
def test_each_runtime_in_the_table_runs_at_its_speed_alone():
    names = runtimes()
    jobs = [(n, inference_job, (CONFIG, BATCH, n)) for n in names]
    _, together = time_isolated(jobs, ROUNDS, progress=True)
    alone = [time_isolated([job], ROUNDS)[1][0] for job in jobs]
    report = ", ".join(f"{n}: {BATCH / t:.1f} vs {BATCH / a:.1f} alone" for n, t, a in zip(names, together, alone))
    print(f"\n{CONFIG}, batch {BATCH}, images/s in the table vs alone: {report}")
    for n, t, a in zip(names, together, alone):
        assert abs(t / a - 1) <= 0.2, f"{n}: {BATCH / t:.1f} images/s in the table, {BATCH / a:.1f} alone ({report})"
