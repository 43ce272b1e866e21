"""Loads the compiled ``hrfast._C`` extension; hrfast runs on reference paths without it."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

try:
    from . import _C  # noqa: F401  (registers torch.ops.hrfast.* on import)
    HAS_EXTENSION = True
    IMPORT_ERROR = None
except ImportError as exc:  # a source checkout that was not built, or a failed build
    HAS_EXTENSION = False
    IMPORT_ERROR = exc
    warnings.warn(f"hrfast._C extension not available ({exc}); using the pure-PyTorch reference "
                  "ops (build with `pip install --no-build-isolation -e .`)", RuntimeWarning,
                  stacklevel=2)


def has_cuda_ops() -> bool:
    """True when the extension was built with its CUDA kernels."""
    if not HAS_EXTENSION:
        return False
    return bool(torch.ops.hrfast.cuda_built())
