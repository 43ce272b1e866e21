"""pytest-benchmark: one exchange unit of W32 256x192 at batch 32 (stages 2, 3, 4), forward and
forward+backward, for the reference, torch.compile(reference) and the fused Triton path.

GPU only: on the CPU the Triton kernels run in the interpreter, whose timings mean nothing.
"""
import copy

import pytest
import torch

from hrfast.models.exchange import ExchangeUnit
from hrfast.ops.exchange import FusedExchange
from hrfast.ops.fused_sum import HAS_TRITON

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON),
                                reason="exchange-unit timings need a CUDA GPU with Triton")

# W32 256x192: branch 0 is 64x48; stage s has s branches of 32 * 2^j channels
STAGES = {2: [32, 64], 3: [32, 64, 128], 4: [32, 64, 128, 256]}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("variant", ["reference", "compile", "fused"])
@pytest.mark.parametrize("stage", [2, 3, 4])
def test_exchange_unit(benchmark, stage, variant, backward, dtype):
    ch = STAGES[stage]
    benchmark.group = f"stage{stage} {'fwd+bwd' if backward else 'fwd'} {str(dtype)[6:]}"
    unit = ExchangeUnit(ch, len(ch)).cuda().to(dtype).train(backward)
    if variant == "fused":
        unit._fused = FusedExchange()
        fn = unit
    elif variant == "compile":
        fn = torch.compile(copy.deepcopy(unit))
    else:
        fn = unit
    xs = [torch.randn(32, c, 64 >> j, 48 >> j, device="cuda", dtype=dtype, requires_grad=backward)
          for j, c in enumerate(ch)]

    def run():
        out = fn(xs)
        if backward:
            sum(o.float().sum() for o in out).backward()
        torch.cuda.synchronize()

    run()
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(run, rounds=20, warmup_rounds=3)
    benchmark.extra_info["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
