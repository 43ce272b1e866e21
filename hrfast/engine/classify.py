"""ImageNet classification with HRNet-W*-C: training, top-1/top-5 evaluation and prediction.

The recipe is HRNet-Image-Classification's: SGD (momentum 0.9, Nesterov, weight decay 1e-4)
at LR 0.05 decayed 10x at epochs 30/60/90 of 100, cross-entropy, random resized crops and
flips in training, the 0.875 centre crop in evaluation. Its experiment YAML's ``TRAIN``,
``TEST``, ``DATASET`` and ``WORKERS`` keys are read (:func:`classify_settings`); ``MODEL`` builds
the net (:func:`hrfast.build_model`). A run writes what :mod:`hrfast.engine.epochs` writes
(``checkpoint.pth``, ``model_best.pth``, ``metrics.jsonl``) and ``classes.json``, the label order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Mapping

import torch
from torch import nn
from tqdm import tqdm

from ..config import read_yaml
from ..data.imagefolder import ImageFolder, center_crop
from ..data.transforms import read_image_rgb
from ..models import build_model
from ..outputs import write_json
from .data import loader_workers, make_loader
from .epochs import Loop, cpu_training_layout, run_epochs


@dataclass(frozen=True)
class ClassifySettings:
    """What a classification run reads from its YAML (official key beside each field)."""
    root: str = ""               # DATASET.ROOT: holds TRAIN_SET/<class>/ and TEST_SET/<class>/
    train_set: str = "train"     # DATASET.TRAIN_SET
    test_set: str = "val"        # DATASET.TEST_SET
    image_size: int = 224        # MODEL.IMAGE_SIZE (square)
    epochs: int = 100            # TRAIN.END_EPOCH
    batch_size: int = 32         # TRAIN.BATCH_SIZE_PER_GPU
    test_batch_size: int = 32    # TEST.BATCH_SIZE_PER_GPU
    lr: float = 0.05             # TRAIN.LR
    lr_step: tuple = (30, 60, 90)  # TRAIN.LR_STEP
    lr_factor: float = 0.1       # TRAIN.LR_FACTOR
    optimizer: str = "sgd"       # TRAIN.OPTIMIZER: sgd or adam
    momentum: float = 0.9        # TRAIN.MOMENTUM
    weight_decay: float = 1e-4   # TRAIN.WD
    nesterov: bool = True        # TRAIN.NESTEROV
    workers: object = "auto"     # WORKERS
    seed: int = 0


def classify_settings(raw: Mapping, **overrides) -> ClassifySettings:
    """The settings of an official classification YAML's contents, then ``overrides`` (the
    command line's: root, epochs, batch_size, workers) where not None."""
    t, d, m = raw.get("TRAIN") or {}, raw.get("DATASET") or {}, raw.get("MODEL") or {}
    base = ClassifySettings()
    s = replace(base, root=str(d.get("ROOT", base.root)), train_set=str(d.get("TRAIN_SET", base.train_set)),
                test_set=str(d.get("TEST_SET", base.test_set)),
                image_size=int((m.get("IMAGE_SIZE") or [base.image_size])[0]),
                epochs=int(t.get("END_EPOCH", base.epochs)),
                batch_size=int(t.get("BATCH_SIZE_PER_GPU", base.batch_size)),
                test_batch_size=int((raw.get("TEST") or {}).get("BATCH_SIZE_PER_GPU", base.test_batch_size)),
                lr=float(t.get("LR", base.lr)), lr_step=tuple(int(v) for v in t.get("LR_STEP", base.lr_step)),
                lr_factor=float(t.get("LR_FACTOR", base.lr_factor)), optimizer=str(t.get("OPTIMIZER", base.optimizer)),
                momentum=float(t.get("MOMENTUM", base.momentum)), weight_decay=float(t.get("WD", base.weight_decay)),
                nesterov=bool(t.get("NESTEROV", base.nesterov)), workers=raw.get("WORKERS", base.workers))
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if s.optimizer not in ("sgd", "adam"):
        raise ValueError(f"TRAIN.OPTIMIZER must be sgd or adam for classification, got {s.optimizer!r}")
    if s.epochs < 1 or s.batch_size < 1 or not s.lr > 0:
        raise ValueError(f"TRAIN.END_EPOCH, TRAIN.BATCH_SIZE_PER_GPU must be >= 1 and TRAIN.LR > 0, got "
                         f"{s.epochs}, {s.batch_size}, {s.lr}")
    return s


def read_task_yaml(config: str) -> Mapping:
    """A family config name (``hrfast.models.family_configs``) or a YAML path, parsed."""
    from ..config import CONFIG_DIR, available_configs
    from ..models.family import FAMILY_DIR, family_configs
    if config in family_configs():
        return read_yaml(FAMILY_DIR / f"{config}.yaml")
    return read_yaml(CONFIG_DIR / f"{config}.yaml" if config in available_configs() else config)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> Dict[int, int]:
    """How many of the (N, C) ``logits`` have the label among their top k, for each k
    (k capped at C)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, :min(k, logits.shape[1])].any(1).sum()) for k in ks}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader, device, progress: bool = True) -> Dict[str, float]:
    """Top-1 and top-5 accuracy (percent) and error of ``model`` on ``loader``."""
    model.eval()
    hits, n = {1: 0, 5: 0}, 0
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        counts = topk_accuracy(model(batch["image"].to(device)).float().cpu(), batch["label"])
        hits = {k: hits[k] + counts[k] for k in hits}
        n += len(batch["label"])
    top1, top5 = 100.0 * hits[1] / max(n, 1), 100.0 * hits[5] / max(n, 1)
    return {"top-1": top1, "top-5": top5, "top-1 error": 100.0 - top1, "top-5 error": 100.0 - top5}


def format_classification(stats: Dict[str, float]) -> str:
    names = ("top-1", "top-5", "top-1 error", "top-5 error")
    return "\n".join(["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                      "| " + " | ".join(f"{stats[k]:.2f}" for k in names) + " |"])


def _optimizer(model: nn.Module, s: ClassifySettings):
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                           nesterov=s.nesterov and s.momentum > 0)


def _datasets(s: ClassifySettings):
    root = Path(s.root)
    train_set = ImageFolder(root / s.train_set, s.image_size, train=True, seed=s.seed)
    val_set = ImageFolder(root / s.test_set, s.image_size, classes=train_set.classes)
    return train_set, val_set


def train_classifier(config: str, s: ClassifySettings, out_dir, resume: bool = False, device: str = "cpu",
                     progress: bool = True) -> Dict:
    """Train the classifier of ``config`` (a family config name or YAML) per ``s``; evaluate
    after each epoch (:func:`hrfast.engine.epochs.run_epochs`). Returns the last stats, the
    best top-1 and the history."""
    torch.manual_seed(s.seed)
    train_set, val_set = _datasets(s)
    model = cpu_training_layout(build_model(_with_classes(read_task_yaml(config), len(train_set.classes))).to(device),
                                device)
    opt = _optimizer(model, s)
    workers = loader_workers(s.workers)
    val_loader = make_loader(val_set, s.test_batch_size, False, workers, 1, 0, s.seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(out_dir) / "classes.json", train_set.classes)

    def loss(batch):
        return nn.functional.cross_entropy(model(batch["image"].to(device)), batch["label"].to(device))

    loop = Loop(model, opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(s.lr_step), s.lr_factor), train_set,
                loss, lambda: evaluate_classifier(model, val_loader, device, progress), lambda st: st["top-1"],
                s.epochs, s.batch_size, workers, s.seed)
    return run_epochs(loop, out_dir, resume, progress)


def _with_classes(raw: Mapping, num_classes: int) -> Dict:
    """``raw`` with MODEL.NUM_CLASSES set to the dataset's class count."""
    return {**raw, "MODEL": {**(raw.get("MODEL") or {}), "NUM_CLASSES": num_classes}}


def load_classifier(config: str, checkpoint, classes: List[str], device: str = "cpu") -> nn.Module:
    """The classifier of ``config`` with ``len(classes)`` outputs and the weights of
    ``checkpoint`` (strict, weights only)."""
    from ..weights import load_weights
    model = build_model(_with_classes(read_task_yaml(config), len(classes)))
    load_weights(model, checkpoint)
    return model.to(device).eval()


@torch.no_grad()
def predict_classes(model: nn.Module, images, classes: List[str], size: int, device="cpu",
                    k: int = 5) -> List[List[tuple]]:
    """The top-``k`` (class name, probability) of each image file, after the evaluation crop."""
    from ..data.imagefolder import MEAN, STD
    out = []
    for path in images:
        img = center_crop(read_image_rgb(path), size).astype("float32") / 255.0
        x = torch.from_numpy(((img - MEAN) / STD).transpose(2, 0, 1).copy())[None].to(device)
        prob = model(x).float().softmax(1)[0].cpu()
        top = prob.topk(min(k, len(classes)))
        out.append([(classes[i], float(p)) for p, i in zip(top.values, top.indices)])
    return out


def read_classes(path) -> List[str]:
    """The label order a training run wrote (``classes.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file not found: {path} (train writes OUT/classes.json; pass --classes)")
    classes = json.loads(path.read_text())
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path} must hold a list of class names")
    return classes
