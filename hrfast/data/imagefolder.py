"""ImageNet-style classification data: ``<split>/<class>/*.JPEG`` folders, the layout
HRNet-Image-Classification reads (torchvision's ImageFolder, which hrfast does not depend on).

Training samples are a random resized crop (area 8-100% of the image, aspect 3/4-4/3) and a
horizontal flip; evaluation resizes the shorter side to ``size / 0.875`` and takes the centre
crop, as the official ``valid`` transform does. Both normalise with ImageNet's mean and std.
``make_synthetic_imagenet`` writes a small offline dataset in that layout: one shape per class.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .seeded import SeededDataset
from .transforms import read_image_rgb

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
EXTENSIONS = (".jpeg", ".jpg", ".png")


def find_classes(root: Path) -> List[str]:
    """The class folders of ``root``, sorted (their index is the label), or a clear error."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root} (expected <split>/<class>/*.JPEG)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class folders (expected {root}/<class>/*.JPEG)")
    return classes


class ImageFolder(SeededDataset):
    """``root/<class>/<image>`` samples: (3, size, size) normalised tensors and class indices.
    ``classes``: the label order (a trained model's); default the sorted folder names."""

    def __init__(self, root, size: int = 224, train: bool = False, classes: List[str] = None, seed: int = 0):
        self.root, self.size, self.train, self.seed = Path(root), int(size), train, int(seed)
        self.classes = list(classes) if classes else find_classes(self.root)
        self.samples: List[Tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in EXTENSIONS) if folder.is_dir() else []
            self.samples += [(p, label) for p in files]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(EXTENSIONS)}) under {self.root}/<class>/")
        self.items = self.samples

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        path, label = self.samples[i]
        img = read_image_rgb(path)
        if self.train:
            rng = self.rng(i)
            img = random_resized_crop(img, self.size, rng)
            if rng.random() < 0.5:
                img = img[:, ::-1]
        else:
            img = center_crop(img, self.size)
        x = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), "label": label}


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of 8-100% of the area with aspect ratio in [3/4, 4/3], resized to (size, size);
    after ten misses, the centre crop."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (size, size), interpolation=cv2.INTER_LINEAR)
    return center_crop(img, size)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The shorter side resized to size / 0.875, then the centre (size, size)."""
    h, w = img.shape[:2]
    short = int(size / 0.875)
    nw, nh = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return img[y0:y0 + size, x0:x0 + size]


SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def _draw_shape(img: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    c = (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h))
    r = int(rng.uniform(0.18, 0.32) * min(h, w))
    colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
    if kind == "circle":
        cv2.circle(img, c, r, colour, -1, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, -1)
    elif kind == "triangle":
        pts = np.array([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    elif kind == "cross":
        cv2.line(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, max(2, r // 3), cv2.LINE_AA)
        cv2.line(img, (c[0] - r, c[1] + r), (c[0] + r, c[1] - r), colour, max(2, r // 3), cv2.LINE_AA)
    elif kind == "ring":
        cv2.circle(img, c, r, colour, max(2, r // 4), cv2.LINE_AA)
    else:
        cv2.rectangle(img, (c[0] - r, c[1] - r // 4), (c[0] + r, c[1] + r // 4), colour, -1)


def make_synthetic_imagenet(root, num_classes: int = 4, per_class_train: int = 40, per_class_val: int = 10,
                            size: int = 96, seed: int = 0, progress: bool = True) -> Dict[str, Path]:
    """Write (or reuse) ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``: one shape
    per class (``SHAPES``) of random colour, place and size over a cluttered background.
    Returns ``root``, ``train`` and ``val``."""
    from .synthetic import _background, _write_atomic
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPES)} (one shape each), got {num_classes}")
    root = Path(root)
    meta = {"classes": num_classes, "train": per_class_train, "val": per_class_val, "size": size, "seed": seed}
    stamp = root / "synthetic.json"
    paths = {"root": root, "train": root / "train", "val": root / "val"}
    if stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return paths
    for split, count, offset in (("train", per_class_train, 0), ("val", per_class_val, 1_000_000)):
        for label, kind in enumerate(tqdm(SHAPES[:num_classes], desc=f"synthetic {split}", disable=not progress,
                                          leave=False)):
            folder = paths[split] / f"n{label:08d}_{kind}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, offset + label * 100_000 + i])
                img = _background(rng, size, size)
                _draw_shape(img, kind, rng)
                img = np.clip(img, 0, 255).astype(np.uint8)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                if not ok:
                    raise RuntimeError("OpenCV could not encode a synthetic image")
                _write_atomic(folder / f"{kind}_{i:05d}.JPEG", buf.tobytes())
    _write_atomic(stamp, json.dumps(meta).encode())
    return paths
