"""The SimpleBaseline/HRNet training loop, with resumable atomic checkpoints and DDP.

``train(cfg, out_dir)`` reads ``cfg`` once into typed settings (:mod:`hrfast.settings`), trains
the HRNet they describe on the COCO-format data named by ``DATASET`` and evaluates with COCOeval
every ``HRFAST.VAL_EVERY`` epochs (in float32: AMP is a training setting). Under ``torchrun``
(WORLD_SIZE > 1) it wraps the model in DistributedDataParallel (NCCL on GPU, gloo on CPU) and
shards the data with a DistributedSampler. Only rank 0 logs and writes.

As the official ``lib/core/function.py`` shapes it, ``train`` only strings short steps
together: :func:`build_run` (model, loss, optimizer, scheduler, scaler, EMA), :func:`resume`,
:func:`train_one_epoch`, :func:`validate` and :func:`save_checkpoint`.

Files in ``out_dir``: ``checkpoint.pth`` (everything needed to resume, rewritten atomically at
the end of each epoch), ``model_best.pth`` (a plain state_dict of the best-AP weights,
loadable like an official checkpoint), ``final_state.pth``, ``metrics.jsonl`` (one line per
checkpointed epoch), ``config.yaml``, ``keypoint_set.json`` (the dataset's keypoint set, which
``predict --keypoints`` and ``PoseEstimator(keypoints=...)`` read), and the COCO results json of
the last evaluation.
"""
from __future__ import annotations

import copy
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..device import apply_cudnn_settings
from ..inference import inference_settings
from ..models import HRNet
from ..ops.conv3x3 import install_conv3x3, wgrad_pays
from ..ops.heatmap_loss import joints_mse_loss
from ..ops.norm_act import install_norm_act
from ..ops.targets import gaussian_targets
from ..outputs import json_text, write_json, write_text
from ..safe_load import load_checkpoint
from ..settings import RuntimeSettings, Settings, settings_of
from ..weights import load_pretrained
from .checkpoint import (
    apply_schedule,
    atomic_save,
    compare_resumed_config,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from .data import build_dataset, dataset_paths, loader_workers, make_loader
from .evaluate import evaluate, primary_metric
from .loss import JointsMSELoss, JointsOHKMMSELoss
from .optim import OPTIMIZERS, build_optimizer, build_scheduler, load_optimizer_state

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# -- distributed --------------------------------------------------------------------------
def init_distributed(device: Optional[str] = None):
    """(rank, world_size, device) from the torchrun environment; initializes the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return rank, world, dev


class EMA:
    """Exponential moving average of parameters and buffers (decay per step)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
            else:
                e.copy_(p)


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one training run holds: what :func:`build_run` makes and the loop updates."""
    settings: Settings
    out: Path
    rank: int
    world: int
    device: torch.device
    model: nn.Module
    net: nn.Module                      # the model as the step calls it (DDP, compile)
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    ema: Optional[EMA] = None
    start_epoch: int = 0
    best_ap: float = -1.0
    history: List[Dict] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


def _seed_and_device(runtime: RuntimeSettings, device: Optional[str]):
    rank, world, dev = init_distributed(device)
    torch.manual_seed(runtime.seed)
    np.random.seed(runtime.seed)
    random.seed(runtime.seed)
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    apply_cudnn_settings(runtime.cudnn)
    if dev.type == "cpu":
        # A guard against float32 denormals, which x86 cores process far more slowly. It sets
        # the calling thread's FTZ/DAZ flags; no speed effect was measured on the demo.
        torch.set_flush_denormal(True)
    return rank, world, dev


def build_run(cfg: Union[Config, Settings], out_dir, device: Optional[str] = None) -> Run:
    """Seed, pick the device (torchrun's rank), and build the model (channels_last, EMA), the
    loss, the optimizer (torch's fused step), the LR schedule and the AMP scaler."""
    s = settings_of(cfg)
    t, rt = s.train, s.runtime
    if t.amp not in AMP_DTYPES:
        raise ValueError(f"config HRFAST.AMP must be one of {list(AMP_DTYPES)}, got {t.amp!r}")
    if t.optimizer not in OPTIMIZERS:
        raise ValueError(f"config TRAIN.OPTIMIZER must be one of {list(OPTIMIZERS)}, got {t.optimizer!r}")
    rank, world, dev = _seed_and_device(rt, device)
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    amp_dtype = AMP_DTYPES[t.amp]
    model = HRNet.from_config(s.model.spec, backend=rt.backend)
    if s.model.init_weights and s.model.pretrained:
        report = load_pretrained(model, s.model.pretrained, s.model.pretrained_layers)
        if rank == 0:
            print(report)
    model = model.to(dev)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cpu" and rt.fused_bn:
        install_norm_act(model)   # BN + residual + ReLU in two passes each way (hrfast.ops.bn_act)
    if dev.type == "cpu" and rt.native_wgrad and amp_dtype == torch.bfloat16 and wgrad_pays():
        install_conv3x3(model)    # bf16 3x3 weight gradients faster than oneDNN's without AMX
    loss = t.loss
    criterion = (JointsOHKMMSELoss(loss.use_target_weight, loss.topk) if loss.use_ohkm
                 else JointsMSELoss(loss.use_target_weight))
    # the official recipe: Adam without weight decay; WD/MOMENTUM/NESTEROV are SGD's (AdamW takes WD)
    optimizer = build_optimizer(model.parameters(), t.optimizer, t.lr,
                                momentum=t.momentum if t.optimizer == "sgd" else 0.0,
                                weight_decay=t.weight_decay if t.optimizer != "adam" else 0.0,
                                nesterov=t.nesterov if t.optimizer == "sgd" else False,
                                fused=None if t.fused_optimizer else False)
    return Run(s, out, rank, world, dev, model, model, criterion, optimizer, build_scheduler(optimizer, t),
               torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16 and dev.type == "cuda"),
               amp_dtype, EMA(model, t.ema) if t.ema else None, start_epoch=t.begin_epoch)


def distribute(run: Run) -> None:
    """Wrap the model for the step: DDP under torchrun (SyncBN when asked), then compile."""
    t = run.settings.train
    if run.world > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(run.model) if t.sync_bn else run.model
        run.net = nn.parallel.DistributedDataParallel(
            net, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if t.compile:
        run.net = torch.compile(run.net)


def resume(run: Run, required: bool) -> None:
    """Continue from ``out/checkpoint.pth``: weights, optimizer, schedule (a changed one applies,
    with a warning), scaler, EMA, history and RNG states. ``required``: a missing checkpoint is an
    error (``--resume``), else a fresh start (``AUTO_RESUME``)."""
    path = run.out / "checkpoint.pth"
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        return
    ck = load_checkpoint(path, "--resume checkpoint")   # data only: no code runs from it
    missing = {"model", "optimizer", "scheduler", "scaler", "epoch", "best_ap", "rng"} - set(
        ck if isinstance(ck, dict) else {})
    if missing:
        raise ValueError(f"cannot resume: {path} lacks {sorted(missing)} (not an hrfast training checkpoint)")
    changed = compare_resumed_config(ck.get("config") or {}, run.settings.config, path)
    run.model.load_state_dict(ck["model"])
    load_optimizer_state(run.optimizer, ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    if changed and isinstance(run.scheduler, torch.optim.lr_scheduler.MultiStepLR):
        apply_schedule(run.scheduler, run.optimizer, run.settings.train)   # the new steps and LR apply from here on
        if run.main:
            warnings.warn(f"resuming {path} with a changed schedule: {'; '.join(changed)}", stacklevel=3)
    run.scaler.load_state_dict(ck["scaler"])
    if run.ema is not None and ck.get("ema") is not None:
        run.ema.model.load_state_dict(ck["ema"])
    run.start_epoch, run.best_ap, run.history = ck["epoch"], ck["best_ap"], ck.get("history", [])
    set_rng_state(ck["rng"])
    if run.main:
        print(f"resumed from {path} at epoch {run.start_epoch}")
        # the log holds what the checkpoint holds: no epoch twice after a kill
        write_text(run.out / "metrics.jsonl", "".join(json_text(r) + "\n" for r in run.history))


_resume = resume   # train()'s parameter of the same name hides the function


def _loss(run: Run, pred: torch.Tensor, batch, joint_weights) -> torch.Tensor:
    """The loss of the step: from the joints (HRFAST.FUSED_LOSS: no target maps at all), or
    against targets made on the device (HRFAST.TARGETS_ON_DEVICE) or by the loader."""
    data, t, dev = run.settings.data, run.settings.train, run.device
    if t.loss.from_joints:
        jw = None if joint_weights is None else joint_weights.to(dev)
        per = joints_mse_loss(pred, batch["joints"].to(dev), batch["joints_vis"].to(dev), data.image_size,
                              data.sigma, data.encoding, jw, t.loss.use_target_weight)
        return run.criterion.reduce(per)
    if t.targets_on_device:
        target, weight = gaussian_targets(batch["joints"].to(dev), batch["joints_vis"].to(dev), data.image_size,
                                          data.heatmap_size, data.sigma, data.encoding, joint_weights=joint_weights)
    else:
        target, weight = batch["target"].to(dev), batch["target_weight"].to(dev)
    return run.criterion(pred.float(), target, weight)


def _step(run: Run, x: torch.Tensor, batch, joint_weights, where: str) -> float:
    """One optimizer step (AMP, gradient clipping, EMA); returns the loss."""
    with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        pred = run.net(x)
    loss = _loss(run, pred, batch, joint_weights)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at {where}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.settings.train.grad_clip:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.settings.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model)
    return loss.item()


def train_one_epoch(run: Run, loader, epoch: int, joint_weights=None, progress: bool = True,
                    max_steps: Optional[int] = None) -> Dict:
    """One pass over ``loader`` and the scheduler's step; returns the epoch's log row."""
    run.net.train()
    t0, seen, loss_sum, steps = time.perf_counter(), 0, 0.0, 0
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    end = run.settings.train.end_epoch
    bar = tqdm(loader, total=total, desc=f"epoch {epoch + 1}/{end}", disable=not (run.main and progress), leave=False)
    for i, batch in enumerate(bar):
        if i >= total:
            break
        x = batch["image"].to(run.device, non_blocking=True)
        if run.settings.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss_sum += _step(run, x, batch, joint_weights, f"epoch {epoch + 1}, step {i}")
        steps += 1
        seen += x.shape[0] * run.world
        if run.main and progress:
            bar.set_postfix(loss=f"{loss_sum / steps:.3e}", lr=f"{run.optimizer.param_groups[0]['lr']:.1e}",
                            img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.1f}")
    run.scheduler.step()
    elapsed = time.perf_counter() - t0
    return {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1), "lr": run.optimizer.param_groups[0]["lr"],
            "images_per_s": seen / max(elapsed, 1e-9), "seconds": elapsed}


def validate(run: Run, val_loader, progress: bool = True) -> Dict[str, float]:
    """COCOeval of the evaluated weights (EMA's when kept); a new best AP writes model_best.pth.
    Under DDP every rank first takes rank 0's parameters and BN statistics, the saved ones."""
    s, model = run.settings, run.eval_model
    if run.world > 1:
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor.data, 0)
    how = inference_settings(s.test)
    stats = evaluate(model, val_loader, dataset_paths(s.data, "test")[0], run.device, how.flip_test, how.decode,
                     results_file=run.out / "results_val.json" if run.main else None,
                     oks_thre=s.test.oks_thre, in_vis_thre=s.test.in_vis_thre,
                     channels_last=s.runtime.channels_last, progress=progress and run.main,
                     shift_heatmap=how.shift_heatmap)
    if run.main and primary_metric(stats) > run.best_ap:
        run.best_ap = primary_metric(stats)
        atomic_save(model.state_dict(), run.out / "model_best.pth")   # unwrapped: no DDP/compile prefixes
    return stats


def save_checkpoint(run: Run, row: Dict) -> None:
    """checkpoint.pth for the epoch of ``row``, then its line in metrics.jsonl (rank 0)."""
    if not run.main:
        return
    atomic_save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                 "ema": run.ema.model.state_dict() if run.ema is not None else None,
                 "epoch": row["epoch"], "best_ap": run.best_ap, "history": run.history,
                 "rng": rng_state(), "config": run.settings.config.to_dict()}, run.out / "checkpoint.pth")
    with open(run.out / "metrics.jsonl", "a") as f:   # after the checkpoint that holds this epoch
        f.write(json_text(row, "metrics.jsonl") + "\n")


def _loaders(run: Run):
    s = run.settings
    joints_only = s.train.targets_on_device or s.train.loss.from_joints    # the step makes no maps from them
    train_set = build_dataset(s.data, train=True, targets_on_device=joints_only)
    val_set = build_dataset(s.data, train=False)
    bs = s.train.batch_size
    if len(train_set) < bs * run.world:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one batch "
                         f"({bs} x {run.world} processes): lower TRAIN.BATCH_SIZE_PER_GPU")
    workers = loader_workers(s.runtime.workers)
    if workers > 0:
        # OpenCV's own thread pool in every loader process would compete with the training
        # threads. Set it here, before the workers fork: calling it inside a forked worker
        # can deadlock on the parent's pool.
        cv2.setNumThreads(1)
    val_loader = make_loader(val_set, s.test.batch_size, False, workers, run.world, run.rank, s.runtime.seed)
    return train_set, val_loader


def _log(run: Run, row: Dict, writer, progress: bool) -> None:
    if not run.main:
        return
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k.replace(" ", "_"), v, row["epoch"])
    if progress:
        msg = (f"epoch {row['epoch']}/{run.settings.train.end_epoch}  loss {row['loss']:.3e}  "
               f"{row['images_per_s']:.1f} img/s")
        print(msg + (f"  AP {row['AP']:.3f}" if "AP" in row else "")
              + (f"  PCKh {row['Mean']:.2f}" if "Mean" in row else ""))


def train(cfg: Union[Config, Settings], out_dir, resume: bool = False, device: Optional[str] = None,
          progress: bool = True, max_steps_per_epoch: Optional[int] = None) -> Dict:
    """Train (and evaluate) per ``cfg`` (a config, or settings read from one); returns a
    summary with the last and best stats."""
    run = build_run(cfg, out_dir, device)
    s = run.settings
    if resume or s.train.auto_resume:
        _resume(run, required=resume)
    distribute(run)
    train_set, val_loader = _loaders(run)
    writer = None
    if run.main:
        write_json(run.out / "config.yaml", s.config.to_dict(), indent=1)
        train_set.keypoints.save(run.out / "keypoint_set.json")    # for predict --keypoints
        writer = _tensorboard(run.out)
    stats: Dict[str, float] = {}
    for epoch in range(run.start_epoch, s.train.end_epoch):
        train_set.set_epoch(epoch)
        row = train_one_epoch(run, _train_loader(run, train_set, epoch), epoch, train_set.joint_weights, progress,
                              max_steps_per_epoch)
        if (epoch + 1) % max(s.train.val_every, 1) == 0 or epoch + 1 == s.train.end_epoch:
            stats = validate(run, val_loader, progress)
            row.update(stats)
        run.history.append(row)
        _log(run, row, writer, progress)
        save_checkpoint(run, row)
    if run.main:
        atomic_save(run.eval_model.state_dict(), run.out / "final_state.pth")
    if run.world > 1:
        torch.distributed.barrier()
    return {"stats": stats, "best_ap": run.best_ap, "history": run.history, "model": run.model,
            "rank": run.rank, "world_size": run.world}


def _train_loader(run: Run, train_set, epoch: int):
    t, rt = run.settings.train, run.settings.runtime
    return make_loader(train_set, t.batch_size, True, loader_workers(rt.workers), run.world, run.rank, rt.seed,
                       epoch, run.device.type == "cuda" and rt.pin_memory, shuffle=t.shuffle)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:     # tensorboard not installed: the JSONL log is enough
        return None
    return SummaryWriter(str(out / "tb"))
