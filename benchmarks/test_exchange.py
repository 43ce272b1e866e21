"""pytest-benchmark: one exchange unit of W32 256x192 at batch 64 (stages 2, 3, 4), bf16
channels_last, inference and training step, for eager, torch.compile and the fused path.

GPU only: on the CPU the Triton kernels run in the interpreter, whose timings mean nothing.
``benchmarks/exchange_gpu.py`` is the full report (CUDA events, CUDA graphs, launches, memory,
fraction of the peak, the per-shape dispatch).
"""
import pytest
import torch
from exchange_gpu import W32, make_inputs, unit_variants

from hrfast.kernels.launch import HAS_TRITON

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON),
                                reason="exchange-unit timings need a CUDA GPU with Triton")


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("variant", ["eager", "compile", "fused"])
@pytest.mark.parametrize("stage", [2, 3, 4])
def test_exchange_unit(benchmark, stage, variant, mode):
    dev = torch.device("cuda")
    channels = W32[:stage]
    benchmark.group = f"stage{stage} {mode} bf16"
    unit = unit_variants(channels, mode, dev, max_autotune=False)[variant]
    xs = make_inputs(channels, 64, 64, 48, dev, torch.bfloat16, mode == "train")[0]

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if mode == "train":
                sum(o.float().sum() for o in unit(xs)).backward()
            else:
                with torch.no_grad():
                    unit(xs)
        torch.cuda.synchronize()

    run()
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(run, rounds=20, warmup_rounds=3)
    benchmark.extra_info["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
