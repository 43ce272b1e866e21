"""Loads the compiled ``hrfast._C`` extension; hrfast runs on reference paths without it."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

try:
    from . import _C  # noqa: F401  (registers torch.ops.hrfast.* on import)
    HAS_EXTENSION = True
except ImportError as exc:  # a source checkout that was not built, or a failed build
    HAS_EXTENSION = False
    warnings.warn(f"hrfast._C extension not available ({exc}); using the pure-PyTorch reference "
                  "ops (build with `pip install --no-build-isolation -e .`)", RuntimeWarning,
                  stacklevel=2)


def has_cuda_ops() -> bool:
    """True when the extension was built with its CUDA kernels."""
    if not HAS_EXTENSION:
        return False
    return bool(torch.ops.hrfast.cuda_built())


def parallel_threads() -> int:
    """Threads the extension's CPU ops run on (``at::parallel_for``); 1 for a build without
    OpenMP, 0 without the extension."""
    if not HAS_EXTENSION:
        return 0
    return int(torch.ops.hrfast.parallel_threads())
