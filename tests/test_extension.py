"""The compiled extension as built: its CPU ops run in parallel (a build without -fopenmp
would run ATen's inlined parallel_for on one thread)."""
import pytest
import torch

from hrfast._extension import HAS_EXTENSION, parallel_threads


@pytest.mark.skipif(not HAS_EXTENSION, reason="hrfast._C not built")
def test_cpu_ops_use_every_torch_thread():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)         # at least two, even on a one-core runner
        assert parallel_threads() == 2
        torch.set_num_threads(1)
        assert parallel_threads() == 1
    finally:
        torch.set_num_threads(threads)
