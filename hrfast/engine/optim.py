"""The optimizer of a training run: Adam or SGD on torch's fused (single-kernel) step.

torch's default Adam on the CPU loops over the parameters one tensor at a time; HRNet-W32 has
878 parameter tensors, and that loop costs about 100 ms a step on 2 cores, against 20 ms for
the fused step (``fused=True``, one multi-tensor kernel per dtype/device group). The update
rule is the same; the fused kernel only rounds differently in the last bits.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from ..settings import TrainSettings

OPTIMIZERS = ("adam", "adamw", "sgd")
# devices with fused Adam/AdamW/SGD kernels (CUDA since torch 2.0-2.1; the CPU's came in
# 2.4-2.5, so an older torch that refuses is answered with the default step: build_optimizer)
_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused optimizer step can update all of ``params`` (floating point, dense,
    on the CPU or a CUDA device)."""
    params = list(params)
    return bool(params) and all(p.device.type in _FUSED_DEVICES and p.dtype in _FUSED_DTYPES
                                and not p.is_sparse for p in params)


def build_optimizer(params, name: str = "adam", lr: float = 1e-3, *, momentum: float = 0.0,
                    weight_decay: float = 0.0, nesterov: bool = False,
                    fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """``torch.optim`` Adam / AdamW / SGD over ``params``, with the fused step when
    ``fused`` is None and the parameters allow it (:func:`fused_supported`).

    Args:
        name: ``"adam"``, ``"adamw"`` or ``"sgd"`` (SimpleBaseline and HRNet train with Adam).
        momentum, nesterov: SGD only. weight_decay: all three (Adam's is L2, AdamW's decoupled).
        fused: force (True) or refuse (False) the fused step; None chooses.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    params = list(params)
    if not params:
        raise ValueError("params is empty: the optimizer has nothing to update")
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    auto = fused is None
    if auto:
        fused = fused_supported(tensors)
    elif fused and not fused_supported(tensors):
        raise ValueError("fused=True needs floating-point dense parameters on the CPU or CUDA")
    if name == "sgd":
        cls, kw = torch.optim.SGD, dict(momentum=momentum, nesterov=nesterov)
    elif momentum or nesterov:
        raise ValueError(f"momentum/nesterov are SGD arguments; {name!r} takes betas (torch defaults)")
    else:
        cls, kw = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam), {}
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=fused or None, **kw)
    except RuntimeError:
        if not (fused and auto):
            raise
        # a torch without this fused kernel for the device: the default step, same update rule
        return cls(params, lr=lr, weight_decay=weight_decay, **kw)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` that keeps ``optimizer``'s implementation choice.

    A state dict carries each group's ``fused``/``foreach`` flags, and loading would put those
    of the run that saved it in place of the ones :func:`build_optimizer` chose; a resumed run
    must keep stepping with the same kernel as before, so the flags are restored after loading.
    """
    flags = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, flags):
        group.update(kept)


SCHEDULES = ("step", "cosine")


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainSettings):
    """The learning-rate schedule of ``train.schedule``, stepped once per epoch. ``step``: the
    official MultiStepLR (``TRAIN.LR_STEP``, ``TRAIN.LR_FACTOR``). ``cosine``: a linear warm-up
    over ``HRFAST.WARMUP_EPOCHS`` from a tenth of ``TRAIN.LR``, then a cosine decay to 1% of it
    at ``TRAIN.END_EPOCH``; short runs (the demo) learn more per epoch with it than with the
    official steps, which are placed for 210 epochs."""
    if train.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(train.lr_step), train.lr_factor)
    if train.schedule != "cosine":
        raise ValueError(f"HRFAST.LR_SCHEDULE must be one of {', '.join(SCHEDULES)}, got {train.schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineFactor(train.warmup_epochs, train.end_epoch))


class CosineFactor:
    """The LR factor of epoch ``e`` of the ``cosine`` schedule (an object, not a lambda, so the
    scheduler's state_dict keeps it and a resumed run continues the same curve)."""

    def __init__(self, warmup: int, end: int):
        self.warmup, self.end = warmup, max(end, warmup + 1)

    def __call__(self, e: int) -> float:
        if e < self.warmup:
            return 0.1 + 0.9 * e / self.warmup
        progress = min(1.0, (e - self.warmup) / max(1, self.end - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
