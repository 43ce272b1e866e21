"""pytest-benchmark suite of the C++ ops against the official per-sample numpy code.

Each case is timed twice in the same run (group = case): ``hrfast`` and ``official``; the ratio of
their medians is the speed-up. ``python benchmarks/ops_report.py`` prints the ratios as a table.
"""
import pytest
from ops_cases import SIZES, cases

CASES = {(size, name): fns for size in SIZES for name, fns in cases(size).items()}


@pytest.mark.parametrize("impl", ["hrfast", "official"])
@pytest.mark.parametrize("size,name", list(CASES))
def test_op(benchmark, size, name, impl):
    benchmark.group = f"{name} {size} (32x17)"
    fast, ref = CASES[(size, name)]
    benchmark(fast if impl == "hrfast" else ref)
