"""Backend choice for exchange units: the reference (eager) path or the fused Triton kernels."""
from __future__ import annotations

from torch import nn

from ..models.exchange import ExchangeUnit


def attach_backend(model: nn.Module, backend: str) -> None:
    """Point every :class:`ExchangeUnit` of ``model`` at the implementation named ``backend``.

    The fused Triton exchange units are not implemented yet: ``triton`` raises, ``auto`` resolves
    to the reference path on every device.
    """
    if backend == "triton":
        raise NotImplementedError(
            "backend='triton' (fused Triton exchange units) is not implemented yet; "
            "use backend='reference' or 'auto'")
    for unit in model.modules():
        if isinstance(unit, ExchangeUnit):
            unit._fused = None
