"""Loads the compiled ``hrfast._C`` extension; hrfast runs on reference paths without it.

``_C`` is loaded only when the torch it was compiled against (``_build_info.json``, written by
the build beside it) is the torch imported now: C++ extensions have no stable ABI across torch
releases, and a mismatch shows up as a crash inside a kernel rather than as an import error.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import torch

BUILD_INFO = Path(__file__).with_name("_build_info.json")
REBUILD = "rebuild with `pip install --no-build-isolation --force-reinstall --no-deps .` in the source folder"


def built_against() -> Optional[str]:
    """The torch version ``_C`` was compiled against, or None when the build left no record."""
    try:
        return str(json.loads(BUILD_INFO.read_text())["torch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def torch_mismatch(built: Optional[str], running: str) -> Optional[str]:
    """One line saying why ``_C`` built against ``built`` cannot run on torch ``running``."""
    if built is None or built == running:
        return None
    return (f"hrfast._C was compiled against torch {built} but torch {running} is installed; using the "
            f"pure-PyTorch reference ops ({REBUILD})")


def _load() -> bool:
    problem = torch_mismatch(built_against(), torch.__version__)
    if problem:
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        return False
    try:
        from . import _C  # noqa: F401  (registers torch.ops.hrfast.* on import)
    except ImportError as exc:  # a source checkout that was not built, or a failed build
        warnings.warn(f"hrfast._C extension not available ({exc}); using the pure-PyTorch reference "
                      f"ops ({REBUILD})", RuntimeWarning, stacklevel=3)
        return False
    return True


HAS_EXTENSION = _load()


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
