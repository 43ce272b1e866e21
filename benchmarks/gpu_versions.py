"""The versions line of a GPU session (gpu_session.sh), and its fail-fast check: exit status 4
when a CUDA device is there but ``hrfast._C`` has no CUDA ops (their tests would run the
twins and pass, measuring nothing)."""
import platform
import sys

import torch

import hrfast
from hrfast._extension import has_cuda_ops

try:
    import triton
    TRITON = triton.__version__
except ImportError:
    TRITON = "not installed"

device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {TRITON}, hrfast {hrfast.__version__}, _C built: {hrfast.HAS_EXTENSION}, "
      f"CUDA ops: {has_cuda_ops()}, device: {device}")
sys.exit(4 if torch.cuda.is_available() and not has_cuda_ops() else 0)
