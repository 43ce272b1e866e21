"""The SimpleBaseline/HRNet training loop, with resumable atomic checkpoints and DDP.

``train(cfg, out_dir)`` trains ``HRNet.from_config(cfg)`` on the COCO-format data named by
``cfg.DATASET`` and evaluates with COCOeval every ``HRFAST.VAL_EVERY`` epochs (in float32: AMP is a training setting). Under
``torchrun`` (WORLD_SIZE > 1) it wraps the model in DistributedDataParallel (NCCL on GPU, gloo
on CPU) and shards the data with a DistributedSampler. Only rank 0 logs and writes.

Files in ``out_dir``: ``checkpoint.pth`` (everything needed to resume, rewritten atomically at
the end of each epoch), ``model_best.pth`` (a plain state_dict of the best-AP weights,
loadable like an official checkpoint), ``final_state.pth``, ``metrics.jsonl`` (one line per
epoch), ``config.yaml``, and the COCO results json of the last evaluation.
"""
from __future__ import annotations

import copy
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..data.coco import Augmentation, COCOKeypoints
from ..models import HRNet
from ..ops.targets import gaussian_targets
from ..safe_load import load_checkpoint
from .evaluate import evaluate
from .loss import JointsMSELoss, JointsOHKMMSELoss
from .optim import OPTIMIZERS, build_optimizer, load_optimizer_state

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


# -- data ----------------------------------------------------------------------------------
def dataset_paths(cfg: Config, split: str):
    """(ann_file, image_dir) of ``split`` ('train' or 'test'): explicit DATASET.*_ANN/*_IMAGES
    or the official layout ROOT/annotations/person_keypoints_<SET>.json, ROOT/images/<SET>."""
    d = cfg.DATASET
    ann, images = (d.TRAIN_ANN, d.TRAIN_IMAGES) if split == "train" else (d.TEST_ANN, d.TEST_IMAGES)
    name = d.TRAIN_SET if split == "train" else d.TEST_SET
    root = Path(d.ROOT) if d.ROOT else None
    if not ann:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_ANN must name the {split} data")
        ann = root / "annotations" / f"person_keypoints_{name}.json"
    if not images:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_IMAGES must name the {split} images")
        images = root / "images" / name
    return Path(ann), Path(images)


def build_dataset(cfg: Config, train: bool, targets_on_device: bool = False) -> COCOKeypoints:
    ann, images = dataset_paths(cfg, "train" if train else "test")
    d = cfg.DATASET
    det = None
    if not train and not cfg.TEST.USE_GT_BBOX:
        if not cfg.TEST.COCO_BBOX_FILE:
            raise ValueError("config TEST.USE_GT_BBOX is false but TEST.COCO_BBOX_FILE is empty")
        det = cfg.TEST.COCO_BBOX_FILE
    aug = Augmentation(scale_factor=float(d.SCALE_FACTOR), rotation_factor=float(d.ROT_FACTOR),
                       flip=bool(d.FLIP), prob_half_body=float(d.PROB_HALF_BODY),
                       num_joints_half_body=int(d.NUM_JOINTS_HALF_BODY))
    max_n = int(cfg.HRFAST.MAX_TRAIN_IMAGES) if train and cfg.HRFAST.MAX_TRAIN_IMAGES else None
    return COCOKeypoints(ann, images, cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE, train=train,
                         det_file=det, image_thre=float(cfg.TEST.IMAGE_THRE), sigma=float(cfg.MODEL.SIGMA),
                         encoding=cfg.HRFAST.TARGET_ENCODING, targets_on_device=targets_on_device,
                         augmentation=aug, use_joint_weights=bool(cfg.LOSS.USE_DIFFERENT_JOINTS_WEIGHT),
                         seed=int(cfg.HRFAST.SEED), max_samples=max_n, num_joints=int(cfg.MODEL.NUM_JOINTS))


def make_loader(dataset, batch_size: int, train: bool, workers: int, world: int, rank: int,
                seed: int, epoch: int = 0, pin_memory: bool = False):
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=train, seed=seed)
        sampler.set_epoch(epoch)
    elif train:
        # the shuffle order is a function of (seed, epoch): a resumed run sees the same order
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=train, pin_memory=pin_memory, persistent_workers=False)


# -- checkpoints ---------------------------------------------------------------------------
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


_SCHEDULE_KEYS = ("LR", "LR_STEP", "LR_FACTOR", "END_EPOCH")


def _compare_resumed_config(stored: dict, cfg: Config, path: Path) -> list:
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


def _apply_schedule(scheduler, optimizer, t) -> None:
    """Point a resumed MultiStepLR at the config's LR, milestones and factor, and set the
    current LR to what that schedule gives at the resumed epoch."""
    from bisect import bisect_right
    from collections import Counter
    scheduler.base_lrs = [float(t.LR)] * len(optimizer.param_groups)
    scheduler.milestones = Counter(int(m) for m in t.LR_STEP)
    scheduler.gamma = float(t.LR_FACTOR)
    lr = float(t.LR) * float(t.LR_FACTOR) ** bisect_right(sorted(scheduler.milestones.elements()),
                                                         scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    scheduler._last_lr = [lr] * len(optimizer.param_groups)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of writes that a killed run left behind (``atomic_save``)."""
    for tmp in out.glob(".*.pth.*.tmp"):
        tmp.unlink(missing_ok=True)


def _rng_state():
    """Every RNG's state as tensors and plain data, so that the checkpoint loads with
    ``weights_only=True`` (numpy's key array becomes a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


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


# -- the loop --------------------------------------------------------------------------------
def train(cfg: Config, out_dir, resume: bool = False, device: Optional[str] = None,
          progress: bool = True, max_steps_per_epoch: Optional[int] = None) -> Dict:
    """Train (and evaluate) per ``cfg``; returns a summary with the last and best stats."""
    rank, world, dev = init_distributed(device)
    main = rank == 0
    out = Path(out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
    h = cfg.HRFAST
    seed = int(h.SEED)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if h.DETERMINISTIC:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if dev.type == "cpu":
        # A guard against float32 denormals, which x86 cores process far more slowly. It sets
        # the calling thread's FTZ/DAZ flags; no speed effect was measured on the demo.
        torch.set_flush_denormal(True)
    if h.AMP not in AMP_DTYPES:
        raise ValueError(f"config HRFAST.AMP must be one of {list(AMP_DTYPES)}, got {h.AMP!r}")
    amp_dtype = AMP_DTYPES[h.AMP]

    model = HRNet.from_config(cfg, backend=h.BACKEND).to(dev)
    if h.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, float(h.EMA)) if h.EMA else None
    if cfg.LOSS.USE_OHKM:
        criterion = JointsOHKMMSELoss(cfg.LOSS.USE_TARGET_WEIGHT, int(cfg.LOSS.TOPK))
    else:
        criterion = JointsMSELoss(cfg.LOSS.USE_TARGET_WEIGHT)
    t = cfg.TRAIN
    if t.OPTIMIZER not in OPTIMIZERS:
        raise ValueError(f"config TRAIN.OPTIMIZER must be one of {list(OPTIMIZERS)}, got {t.OPTIMIZER!r}")
    # the official recipe: Adam without weight decay; WD/MOMENTUM/NESTEROV are SGD's (AdamW takes WD)
    optimizer = build_optimizer(model.parameters(), t.OPTIMIZER, float(t.LR),
                                momentum=float(t.MOMENTUM) if t.OPTIMIZER == "sgd" else 0.0,
                                weight_decay=float(t.WD) if t.OPTIMIZER != "adam" else 0.0,
                                nesterov=bool(t.NESTEROV) if t.OPTIMIZER == "sgd" else False,
                                fused=None if h.FUSED_OPTIMIZER else False)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(t.LR_STEP), t.LR_FACTOR)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16 and dev.type == "cuda")

    start_epoch, best_ap, history = int(t.BEGIN_EPOCH), -1.0, []
    ckpt_path = out / "checkpoint.pth"
    if resume or cfg.AUTO_RESUME:
        if ckpt_path.is_file():
            ck = load_checkpoint(ckpt_path, "--resume checkpoint")   # data only: no code runs from it
            missing = {"model", "optimizer", "scheduler", "scaler", "epoch", "best_ap", "rng"} - set(
                ck if isinstance(ck, dict) else {})
            if missing:
                raise ValueError(f"cannot resume: {ckpt_path} lacks {sorted(missing)} (not an hrfast training checkpoint)")
            changed = _compare_resumed_config(ck.get("config") or {}, cfg, ckpt_path)
            model.load_state_dict(ck["model"])
            load_optimizer_state(optimizer, ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            if changed:   # the new schedule and LR apply from here on
                _apply_schedule(scheduler, optimizer, t)
                if main:
                    warnings.warn(f"resuming {ckpt_path} with a changed schedule: {'; '.join(changed)}", stacklevel=2)
            scaler.load_state_dict(ck["scaler"])
            if ema is not None and ck.get("ema") is not None:
                ema.model.load_state_dict(ck["ema"])
            start_epoch, best_ap, history = ck["epoch"], ck["best_ap"], ck.get("history", [])
            _set_rng_state(ck["rng"])
            if main:
                print(f"resumed from {ckpt_path} at epoch {start_epoch}")
                # the log holds what the checkpoint holds: no epoch twice after a kill
                (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        elif resume:
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")

    net = model
    if world > 1:
        if h.SYNC_BN:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    if h.COMPILE:
        net = torch.compile(net)

    train_set = build_dataset(cfg, train=True, targets_on_device=bool(h.TARGETS_ON_DEVICE))
    val_set = build_dataset(cfg, train=False)
    ann_file = dataset_paths(cfg, "test")[0]
    bs = int(t.BATCH_SIZE_PER_GPU)
    if len(train_set) < bs * world:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one batch "
                         f"({bs} x {world} processes): lower TRAIN.BATCH_SIZE_PER_GPU")
    workers = int(cfg.WORKERS)
    if workers > 0:
        # OpenCV's own thread pool in every loader process would compete with the training
        # threads. Set it here, before the workers fork: calling it inside a forked worker
        # can deadlock on the parent's pool.
        import cv2
        cv2.setNumThreads(1)
    pin = dev.type == "cuda" and bool(cfg.PIN_MEMORY)
    val_loader = make_loader(val_set, int(cfg.TEST.BATCH_SIZE_PER_GPU), False, workers, world, rank, seed)
    writer = None
    if main:
        (out / "config.yaml").write_text(json.dumps(cfg.to_dict(), indent=1))
        writer = _tensorboard(out)
    end_epoch = int(t.END_EPOCH)
    stats: Dict[str, float] = {}
    for epoch in range(start_epoch, end_epoch):
        train_set.set_epoch(epoch)
        loader = make_loader(train_set, bs, True, workers, world, rank, seed, epoch, pin)
        net.train()
        t0, seen, loss_sum, steps = time.perf_counter(), 0, 0.0, 0
        total = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
        bar = tqdm(loader, total=total, desc=f"epoch {epoch + 1}/{end_epoch}", disable=not (main and progress),
                   leave=False)
        for i, batch in enumerate(bar):
            if i >= total:
                break
            x = batch["image"].to(dev, non_blocking=True)
            if h.CHANNELS_LAST:
                x = x.contiguous(memory_format=torch.channels_last)
            if h.TARGETS_ON_DEVICE:
                target, weight = gaussian_targets(batch["joints"].to(dev), batch["joints_vis"].to(dev),
                                                  cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE,
                                                  float(cfg.MODEL.SIGMA), h.TARGET_ENCODING,
                                                  joint_weights=train_set.joint_weights)
            else:
                target, weight = batch["target"].to(dev), batch["target_weight"].to(dev)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                pred = net(x)
            loss = criterion(pred.float(), target, weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {i}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if h.GRAD_CLIP:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), float(h.GRAD_CLIP))
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            steps += 1
            seen += x.shape[0] * world
            loss_sum += loss.item()
            if main and progress:
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / steps:.3e}", lr=f"{optimizer.param_groups[0]['lr']:.1e}",
                                img_s=f"{ips:.1f}")
        scheduler.step()
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1), "lr": optimizer.param_groups[0]["lr"],
               "images_per_s": seen / max(elapsed, 1e-9), "seconds": elapsed}
        last = epoch + 1 == end_epoch
        if (epoch + 1) % max(int(h.VAL_EVERY), 1) == 0 or last:
            eval_model = ema.model if ema is not None else model
            if world > 1:   # every rank evaluates rank 0's weights and BN statistics: the saved ones
                for tensor in list(eval_model.parameters()) + list(eval_model.buffers()):
                    torch.distributed.broadcast(tensor.data, 0)
            stats = evaluate(eval_model, val_loader, ann_file, dev, bool(cfg.TEST.FLIP_TEST), h.DECODE,
                             results_file=out / "results_val.json" if main else None,
                             oks_thre=float(cfg.TEST.OKS_THRE), in_vis_thre=float(cfg.TEST.IN_VIS_THRE),
                             channels_last=bool(h.CHANNELS_LAST), progress=progress and main)
            row.update({k: v for k, v in stats.items()})
            if main and stats["AP"] > best_ap:
                best_ap = stats["AP"]
                atomic_save(eval_model.state_dict(), out / "model_best.pth")   # unwrapped: no DDP/compile prefixes
        history.append(row)
        if main:
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k.replace(" ", "_"), v, epoch + 1)
            msg = (f"epoch {epoch + 1}/{end_epoch}  loss {row['loss']:.3e}  "
                   f"{row['images_per_s']:.1f} img/s")
            if "AP" in row:
                msg += f"  AP {row['AP']:.3f}"
            if progress:
                print(msg)
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "ema": ema.model.state_dict() if ema is not None else None,
                         "epoch": epoch + 1, "best_ap": best_ap, "history": history,
                         "rng": _rng_state(), "config": cfg.to_dict()}, ckpt_path)
            with open(out / "metrics.jsonl", "a") as f:   # after the checkpoint that holds this epoch
                f.write(json.dumps(row) + "\n")
    if main:
        atomic_save((ema.model if ema is not None else model).state_dict(), out / "final_state.pth")
    if world > 1:
        torch.distributed.barrier()
    return {"stats": stats, "best_ap": best_ap, "history": history, "model": model,
            "rank": rank, "world_size": world}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:     # tensorboard not installed: the JSONL log is enough
        return None
    return SummaryWriter(str(out / "tb"))

