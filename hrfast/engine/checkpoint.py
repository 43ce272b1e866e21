"""Checkpoints of a training run: atomic writes, the RNG states, and what resuming checks.

``atomic_save`` writes through a temporary file and a rename, so a killed run leaves the previous
file intact. RNG states are kept as tensors and plain data, so that a checkpoint loads with
``weights_only=True`` (``hrfast.safe_load``). On resume the stored config is compared with the
new one: another model or optimizer is an error; a new LR or schedule applies.
"""
from __future__ import annotations

import os
import random
from bisect import bisect_right
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..settings import TrainSettings

_SCHEDULE_KEYS = ("LR", "LR_STEP", "LR_FACTOR")   # END_EPOCH: a longer run is what resuming is for


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``:
    a run killed mid-write leaves the previous file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def compare_resumed_config(stored: dict, cfg: Config, path: Path) -> list:
    """The schedule keys that differ between the checkpoint's config and ``cfg`` (applied on
    resume); a different model or optimizer is an error (the weights or state would not fit)."""
    if not stored:
        return []
    now = cfg.to_dict()
    model_diff = _diff(stored.get("MODEL", {}), now["MODEL"], "MODEL")
    if model_diff:
        raise ValueError(f"cannot resume {path}: it was trained with another model ({'; '.join(model_diff[:3])})")
    if stored.get("TRAIN", {}).get("OPTIMIZER", now["TRAIN"]["OPTIMIZER"]) != now["TRAIN"]["OPTIMIZER"]:
        raise ValueError(f"cannot resume {path}: it was trained with TRAIN.OPTIMIZER="
                         f"{stored['TRAIN']['OPTIMIZER']}, the config asks for {now['TRAIN']['OPTIMIZER']}")
    old_s = stored.get("HRFAST", {}).get("LR_SCHEDULE", "step")
    if old_s != now["HRFAST"]["LR_SCHEDULE"]:
        raise ValueError(f"cannot resume {path}: it was trained with HRFAST.LR_SCHEDULE={old_s}, the config asks "
                         f"for {now['HRFAST']['LR_SCHEDULE']}")
    old_t = stored.get("TRAIN", {})
    return [f"TRAIN.{k} {old_t[k]} -> {now['TRAIN'][k]}" for k in _SCHEDULE_KEYS
            if k in old_t and _plain(old_t[k]) != _plain(now["TRAIN"][k])]


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _diff(a: dict, b: dict, where: str) -> list:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _diff(x, y, f"{where}.{k}")
        elif _plain(x) != _plain(y):
            out.append(f"{where}.{k} {x} -> {y}")
    return out


def apply_schedule(scheduler, optimizer, train: TrainSettings) -> None:
    """Point a resumed MultiStepLR at the settings' LR, milestones and factor, and set the
    current LR to what that schedule gives at the resumed epoch."""
    scheduler.base_lrs = [train.lr] * len(optimizer.param_groups)
    scheduler.milestones = Counter(train.lr_step)
    scheduler.gamma = train.lr_factor
    lr = train.lr * train.lr_factor ** bisect_right(sorted(scheduler.milestones.elements()), scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    scheduler._last_lr = [lr] * len(optimizer.param_groups)


def remove_stale_temporaries(out: Path) -> None:
    """Temporary files of writes that a killed run left behind (``atomic_save``)."""
    for tmp in out.glob(".*.pth.*.tmp"):
        tmp.unlink(missing_ok=True)


def rng_state():
    """Every RNG's state as tensors and plain data, so that the checkpoint loads with
    ``weights_only=True`` (numpy's key array becomes a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
