"""The epoch loop that the tasks beyond pose share (classification, faces): train an epoch,
step the schedule, evaluate, keep the best weights, and checkpoint so that ``--resume`` goes on.

Files in ``out``: ``checkpoint.pth`` (model, optimizer, schedule, epoch, best, history;
rewritten atomically each epoch), ``model_best.pth`` (a plain state_dict) and
``metrics.jsonl`` (one line per epoch).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn
from tqdm import tqdm

from ..ops.conv3x3 import install_conv3x3, wgrad_pays
from ..ops.norm_act import install_norm_act
from ..outputs import json_text
from ..safe_load import load_checkpoint
from .checkpoint import atomic_save
from .data import make_loader


def cpu_training_layout(model: nn.Module, device) -> nn.Module:
    """``model`` for training on ``device``: on the CPU in channels_last (oneDNN's own layout)
    with each BN + residual + ReLU of its blocks and stem on ``hrfast.ops.bn_act`` (the face
    and classification nets train 1.2-1.3x faster) and, on a CPU where it pays
    (``hrfast.ops.conv3x3.wgrad_pays``), its 3x3 convs on ``Conv3x3``; elsewhere as it is."""
    if torch.device(device).type != "cpu":
        return model
    model = model.to(memory_format=torch.channels_last)
    install_norm_act(model)
    if wgrad_pays():
        install_conv3x3(model)   # acts under bf16 autocast only (hrfast.ops.conv3x3)
    return model


@dataclass
class Loop:
    """What :func:`run_epochs` drives. ``loss(batch)`` returns the step's scalar loss;
    ``evaluate()`` the epoch's stats; ``score(stats)`` the figure to maximise."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: object
    loss: Callable
    evaluate: Callable[[], Dict[str, float]]
    score: Callable[[Dict[str, float]], float]
    epochs: int
    batch_size: int
    workers: int
    seed: int


def run_epochs(loop: Loop, out_dir, resume: bool = False, progress: bool = True) -> Dict:
    """Train ``loop.epochs`` epochs (from the checkpoint's when ``resume``); returns the last
    stats, the best score and the history."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start, best, history = 0, float("-inf"), []
    if resume:
        ck = load_checkpoint(out / "checkpoint.pth", "--resume checkpoint")
        loop.model.load_state_dict(ck["model"])
        loop.optimizer.load_state_dict(ck["optimizer"])
        loop.scheduler.load_state_dict(ck["scheduler"])
        start, best, history = int(ck["epoch"]), float(ck["best"]), list(ck["history"])
    stats: Dict[str, float] = {}
    for epoch in range(start, loop.epochs):
        row = _train_epoch(loop, epoch, progress)
        loop.scheduler.step()
        stats = loop.evaluate()
        row.update(stats)
        history.append(row)
        if loop.score(stats) > best:
            best = loop.score(stats)
            atomic_save(loop.model.state_dict(), out / "model_best.pth")
        atomic_save({"model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
                     "scheduler": loop.scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                     "history": history}, out / "checkpoint.pth")
        with open(out / "metrics.jsonl", "a") as f:      # after the checkpoint that holds the epoch
            f.write(json_text(row, "metrics.jsonl") + "\n")
    return {"stats": stats, "best": best, "history": history, "model": loop.model}


def _train_epoch(loop: Loop, epoch: int, progress: bool) -> Dict:
    loop.model.train()
    if hasattr(loop.train_set, "set_epoch"):
        loop.train_set.set_epoch(epoch)
    loader = make_loader(loop.train_set, loop.batch_size, True, loop.workers, 1, 0, loop.seed, epoch)
    t0, total, steps = time.perf_counter(), 0.0, 0
    for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{loop.epochs}", disable=not progress, leave=False):
        loss = loop.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} in epoch {epoch + 1}, step {steps}")
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        total += loss.item()
        steps += 1
    return {"epoch": epoch + 1, "loss": total / max(steps, 1), "lr": loop.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0}
