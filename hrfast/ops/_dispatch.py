"""When a native ``torch.ops.hrfast`` kernel can serve a tensor, and shared argument checks."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from .._extension import HAS_EXTENSION, has_cuda_ops


def native_available(t: torch.Tensor) -> bool:
    """True when the compiled extension has a kernel for ``t``'s device."""
    if not HAS_EXTENSION:
        return False
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and has_cuda_ops()


def size_pair(value: Sequence[int], name: str) -> Tuple[int, int]:
    """Validate a (width, height) pair of positive ints."""
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height), got {value!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{name} must be positive (width, height), got {value!r}")
    return w, h


def check_tensor(t, name: str, dims: int, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {shape_doc}, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype == torch.bool or not t.is_complex()):
        raise TypeError(f"{name} must be a real tensor, got {t.dtype}")
