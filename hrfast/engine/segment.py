"""Semantic segmentation with HRNetV2: training, mIoU evaluation and prediction.

The recipe is HRNet-Semantic-Segmentation's: SGD (momentum 0.9, weight decay 5e-4) at LR 0.01
with the poly schedule ((1 - epoch / epochs) ** 0.9), cross-entropy on the logits resized to the
label (bilinear), ignoring 255, optionally OHEM (``LOSS.USE_OHEM``: the pixels whose true class
has probability under ``LOSS.OHEMTHRES``, at least ``LOSS.OHEMKEEP``). Its YAML's ``DATASET``
(``ROOT``, ``TRAIN_SET``, ``TEST_SET``: list files), ``TRAIN`` (``IMAGE_SIZE``: the crop, ``LR``,
``WD``, ``MOMENTUM``, ``END_EPOCH``, ``BATCH_SIZE_PER_GPU``) and ``LOSS`` keys are read.

mIoU is the official one: a confusion matrix over the valid pixels, per class IoU =
TP / max(1, TP + FP + FN), and their mean over the 19 classes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.cityscapes import CLASSES, IGNORE, CityscapesSegmentation
from ..models import build_model
from .data import loader_workers, make_loader
from .epochs import Loop, cpu_training_layout, run_epochs


@dataclass(frozen=True)
class SegSettings:
    root: str = ""                  # DATASET.ROOT
    train_list: str = ""            # DATASET.TRAIN_SET (a list file, relative to ROOT or absolute)
    test_list: str = ""             # DATASET.TEST_SET
    crop: tuple = (1024, 512)       # TRAIN.IMAGE_SIZE (width, height)
    epochs: int = 484               # TRAIN.END_EPOCH
    batch_size: int = 3             # TRAIN.BATCH_SIZE_PER_GPU
    test_batch_size: int = 1        # TEST.BATCH_SIZE_PER_GPU
    lr: float = 0.01                # TRAIN.LR
    momentum: float = 0.9           # TRAIN.MOMENTUM
    weight_decay: float = 5e-4      # TRAIN.WD
    ohem: bool = False              # LOSS.USE_OHEM
    ohem_thres: float = 0.9         # LOSS.OHEMTHRES
    ohem_keep: int = 131072         # LOSS.OHEMKEEP
    flip_test: bool = False         # TEST.FLIP_TEST
    window: tuple = ()              # TEST.SLIDE_WINDOW (width, height; hrfast's), else TRAIN.IMAGE_SIZE
                                    # with TEST.MULTI_SCALE, else () (whole images)
    scales: tuple = (1.0,)          # TEST.SCALE_LIST when TEST.MULTI_SCALE
    workers: object = "auto"        # WORKERS
    seed: int = 0


def seg_settings(raw: Mapping, **overrides) -> SegSettings:
    d, t, lo = raw.get("DATASET") or {}, raw.get("TRAIN") or {}, raw.get("LOSS") or {}
    te, b = raw.get("TEST") or {}, SegSettings()
    root = str(d.get("ROOT", b.root))
    s = replace(b, root=root, train_list=_resolve(root, d.get("TRAIN_SET", b.train_list)),
                test_list=_resolve(root, d.get("TEST_SET", b.test_list)),
                crop=tuple(int(v) for v in t.get("IMAGE_SIZE", b.crop)), epochs=int(t.get("END_EPOCH", b.epochs)),
                batch_size=int(t.get("BATCH_SIZE_PER_GPU", b.batch_size)),
                test_batch_size=int(te.get("BATCH_SIZE_PER_GPU", b.test_batch_size)), lr=float(t.get("LR", b.lr)),
                momentum=float(t.get("MOMENTUM", b.momentum)), weight_decay=float(t.get("WD", b.weight_decay)),
                ohem=bool(lo.get("USE_OHEM", b.ohem)), ohem_thres=float(lo.get("OHEMTHRES", b.ohem_thres)),
                ohem_keep=int(lo.get("OHEMKEEP", b.ohem_keep)), flip_test=bool(te.get("FLIP_TEST", b.flip_test)),
                # the official multi-scale test slides windows of the training crop
                window=tuple(int(v) for v in te.get("SLIDE_WINDOW") or (t.get("IMAGE_SIZE", b.crop)
                                                                        if te.get("MULTI_SCALE") else ())),
                scales=tuple(float(v) for v in te.get("SCALE_LIST", b.scales)) if te.get("MULTI_SCALE") else b.scales,
                workers=raw.get("WORKERS", b.workers))
    return replace(s, **{k: v for k, v in overrides.items() if v is not None})


def _resolve(root: str, name) -> str:
    if not name:
        return ""
    p = Path(str(name))
    return str(p if p.is_absolute() or not root else Path(root) / p)


def seg_loss(logits: torch.Tensor, label: torch.Tensor, s: SegSettings) -> torch.Tensor:
    """Cross-entropy of (B, C, h, w) logits resized to the (B, H, W) labels; OHEM when asked."""
    logits = nn.functional.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
    if not s.ohem:
        return nn.functional.cross_entropy(logits, label, ignore_index=IGNORE)
    pixel = nn.functional.cross_entropy(logits, label, ignore_index=IGNORE, reduction="none").flatten()
    valid = label.flatten() != IGNORE
    prob = torch.exp(-pixel[valid])                 # the true class's probability
    if prob.numel() == 0:
        return pixel.sum() * 0
    keep = min(s.ohem_keep, prob.numel())
    threshold = max(float(prob.sort().values[keep - 1]), s.ohem_thres)
    hard = pixel[valid][prob < threshold]
    return hard.mean() if hard.numel() else pixel[valid].mean()


def confusion(pred: np.ndarray, label: np.ndarray, classes: int = len(CLASSES)) -> np.ndarray:
    """(C, C) counts: rows the true class, columns the predicted, ignored pixels left out."""
    valid = label != IGNORE
    return np.bincount(label[valid].astype(np.int64) * classes + pred[valid], minlength=classes * classes
                       ).reshape(classes, classes)


def miou_stats(conf: np.ndarray) -> Dict[str, float]:
    tp = np.diag(conf).astype(np.float64)
    pos, res = conf.sum(1), conf.sum(0)
    iou = tp / np.maximum(1.0, pos + res - tp)
    out = {"mIoU": float(iou.mean()), "pixel acc": float(tp.sum() / max(1.0, pos.sum())),
           "mean acc": float((tp / np.maximum(1.0, pos)).mean())}
    out.update({f"IoU {name}": float(v) for name, v in zip(CLASSES, iou)})
    return out


def _logits(model, images: torch.Tensor, flip: bool) -> torch.Tensor:
    """(B, C, H, W) float logits at the input's size, plus the flipped input's when ``flip``."""
    out = nn.functional.interpolate(model(images).float(), size=images.shape[-2:], mode="bilinear",
                                    align_corners=False)
    if flip:
        flipped = nn.functional.interpolate(model(images.flip(3)).float(), size=images.shape[-2:],
                                            mode="bilinear", align_corners=False)
        out = out + flipped.flip(3)
    return out


def _starts(size: int, window: int, stride: int) -> list:
    """Window origins covering [0, size): every ``stride``, the last one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


def sliding_logits(model, images: torch.Tensor, window, flip: bool = False) -> torch.Tensor:
    """Logits of an image larger than ``window`` (width, height): windows at 2/3 of the window
    apart, each window's logits added where it lies, divided by the windows covering each pixel
    (as the official ``multi_scale_inference`` slides); a smaller image runs whole."""
    B, _, H, W = images.shape
    ww, wh = int(window[0]), int(window[1])
    if H <= wh and W <= ww:
        return _logits(model, images, flip)
    total, count = None, images.new_zeros(1, 1, H, W)
    for y in _starts(H, wh, max(1, wh * 2 // 3)):
        for x in _starts(W, ww, max(1, ww * 2 // 3)):
            part = _logits(model, images[:, :, y:y + wh, x:x + ww], flip)
            if total is None:
                total = images.new_zeros(B, part.shape[1], H, W)
            total[:, :, y:y + wh, x:x + ww] += part
            count[:, :, y:y + wh, x:x + ww] += 1
    return total / count


@torch.no_grad()
def segment(model, images: torch.Tensor, flip: bool = False, window=None, scales=(1.0,)) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W) train ids: the logits resized to the input, argmax. ``flip``
    adds the flipped input's; ``window`` (width, height) slides windows over a larger image;
    ``scales`` sums the logits of the image resized by each (multi-scale), back at its size."""
    H, W = images.shape[-2:]
    total = None
    for scale in scales:
        x = images if scale == 1.0 else nn.functional.interpolate(
            images, scale_factor=float(scale), mode="bilinear", align_corners=False)
        logits = sliding_logits(model, x, window, flip) if window else _logits(model, x, flip)
        if scale != 1.0:
            logits = nn.functional.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total.argmax(1)


def evaluate_segmentation(model, s: SegSettings, device, progress: bool = True) -> Dict[str, float]:
    """mIoU, pixel and mean accuracy and the per-class IoU on the test list (whole images, or
    sliding windows and several scales as the settings say)."""
    model.eval()
    ds = CityscapesSegmentation(s.root, s.test_list)
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for batch in tqdm(make_loader(ds, s.test_batch_size, False, loader_workers(s.workers), 1, 0, 0), desc="eval",
                      disable=not progress, leave=False):
        pred = segment(model, batch["image"].to(device), s.flip_test, s.window, s.scales).cpu().numpy()
        conf += confusion(pred, batch["label"].numpy())
    return miou_stats(conf)


def format_segmentation(stats: Dict[str, float]) -> str:
    lines = ["| mIoU | pixel acc | mean acc |", "|---:|---:|---:|",
             f"| {stats['mIoU'] * 100:.2f} | {stats['pixel acc'] * 100:.2f} | {stats['mean acc'] * 100:.2f} |",
             "", "| class | IoU |", "|---|---:|"]
    lines += [f"| {name} | {stats['IoU ' + name] * 100:.2f} |" for name in CLASSES]
    return "\n".join(lines)


def train_segmentation(raw: Mapping, s: SegSettings, out_dir, resume: bool = False, device: str = "cpu",
                       progress: bool = True) -> Dict:
    torch.manual_seed(s.seed)
    model = cpu_training_layout(build_model(raw).to(device), device)
    train_set = CityscapesSegmentation(s.root, s.train_list, train=True, crop=s.crop, seed=s.seed)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    poly = torch.optim.lr_scheduler.LambdaLR(opt, PolyFactor(s.epochs))

    def loss(batch):
        return seg_loss(model(batch["image"].to(device)), batch["label"].to(device), s)

    loop = Loop(model, opt, poly, train_set, loss, lambda: evaluate_segmentation(model, s, device, progress),
                lambda st: st["mIoU"], s.epochs, s.batch_size, loader_workers(s.workers), s.seed)
    return run_epochs(loop, out_dir, resume, progress)


class PolyFactor:
    """The poly schedule's factor at epoch ``e`` (an object so that the scheduler's state keeps it)."""

    def __init__(self, epochs: int):
        self.epochs = max(1, int(epochs))

    def __call__(self, e: int) -> float:
        return max(0.0, 1.0 - e / self.epochs) ** 0.9


def predict_segmentation(model, image_path, device="cpu") -> np.ndarray:
    """(H, W) train ids of one image file, whole-image inference."""
    from ..data.transforms import read_image_rgb, to_tensor
    img = read_image_rgb(image_path)
    return segment(model, to_tensor(img)[None].to(device))[0].cpu().numpy().astype(np.uint8)
