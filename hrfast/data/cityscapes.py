"""Cityscapes in the layout HRNet-Semantic-Segmentation reads: list files of
``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png gtFine/<split>/<city>/<name>_gtFine_labelIds.png``
pairs, relative to the dataset root. Label ids map to the 19 train classes (Cordts et al.,
CVPR 2016: the classes with ``ignoreInEval`` false), every other id to 255, which the loss and
the metric ignore.

Training takes a random rescale (x [0.5, 2.0]), a random crop of ``crop`` (width, height),
padded with the mean colour and label 255 where the image is smaller, and a flip; evaluation
the whole image. ``make_synthetic_cityscapes`` writes a small street-like dataset, offline.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .seeded import SeededDataset
from .transforms import read_image_rgb, to_tensor

IGNORE = 255
# label id -> train id of the 19 evaluated classes (cityscapesScripts' labels.py)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
           "bicycle")
PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)
_LUT = np.full(256, IGNORE, np.uint8)
for _label, _train in TRAIN_IDS.items():
    _LUT[_label] = _train


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) Cityscapes label ids -> train ids 0..18, 255 elsewhere."""
    return _LUT[np.asarray(label_ids, np.uint8)]


def read_list(root, list_file) -> List[Tuple[Path, Path]]:
    """The (image, label) pairs of a list file, resolved against ``root``."""
    root, list_file = Path(root), Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"segmentation list file not found: {list_file}")
    pairs = []
    for n, line in enumerate(list_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{n}: expected 'leftImg8bit/... gtFine/..._labelIds.png', got {line!r}")
        pairs.append((root / parts[0], root / parts[1]))
    if not pairs:
        raise ValueError(f"{list_file} lists no images")
    for image, label in pairs[:20]:
        for p in (image, label):
            if not p.is_file():
                raise FileNotFoundError(f"{list_file} names {p}, which does not exist under {root}")
    return pairs


class CityscapesSegmentation(SeededDataset):
    """``image`` (3, H, W) ImageNet-normalised and ``label`` (H, W) int64 train ids."""

    def __init__(self, root, list_file, train: bool = False, crop: Sequence[int] = (1024, 512), seed: int = 0):
        self.pairs = read_list(root, list_file)
        self.train, self.crop, self.seed, self.items = train, tuple(int(v) for v in crop), int(seed), self.pairs

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        image_path, label_path = self.pairs[i]
        img = read_image_rgb(image_path)
        raw = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.shape[:2] != img.shape[:2]:
            raise ValueError(f"label {label_path} is unreadable or not the size of {image_path}")
        label = to_train_ids(raw if raw.ndim == 2 else raw[..., 0])
        if self.train:
            img, label = _augment(img, label, self.crop, self.rng(i))
        return {"image": to_tensor(np.ascontiguousarray(img)), "label": torch.from_numpy(label.astype(np.int64))}


def _augment(img, label, crop, rng):
    s = rng.uniform(0.5, 2.0)
    h, w = img.shape[:2]
    size = (max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    cw, ch = crop
    ph, pw = max(ch - img.shape[0], 0), max(cw - img.shape[1], 0)
    if ph or pw:             # pad with the mean colour (0 after normalising) and the ignore label
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(124, 116, 104))
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
    y0, x0 = int(rng.integers(0, img.shape[0] - ch + 1)), int(rng.integers(0, img.shape[1] - cw + 1))
    img, label = img[y0:y0 + ch, x0:x0 + cw], label[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        img, label = img[:, ::-1], label[:, ::-1]
    return img, label


def colour_overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3) RGB blended with the Cityscapes colours of ``train_ids`` (H, W)."""
    colours = PALETTE[np.clip(train_ids, 0, len(PALETTE) - 1)]
    out = (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)
    out[train_ids == IGNORE] = image[train_ids == IGNORE]
    return out


def _render_street(rng: np.random.Generator, size: Tuple[int, int]):
    """A street-like scene and its label ids: sky, buildings, vegetation, road, sidewalk, cars
    and people (label ids 23, 11, 21, 7, 8, 26, 24)."""
    w, h = size
    img, lab = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.uint8)
    horizon = int(rng.uniform(0.35, 0.55) * h)
    img[:horizon], lab[:horizon] = rng.uniform([60, 110, 160], [110, 160, 230]), 23
    img[horizon:], lab[horizon:] = rng.uniform([90, 60, 90], [150, 100, 150]), 7
    walk = int(horizon + rng.uniform(0.05, 0.15) * h)
    img[horizon:walk], lab[horizon:walk] = rng.uniform([200, 20, 200], [250, 60, 250]), 8
    x = 0
    while x < w:                                    # buildings and trees along the horizon
        bw, bh = int(rng.uniform(0.1, 0.3) * w), int(rng.uniform(0.15, 0.35) * h)
        tree = rng.random() < 0.3
        colour, lid = ((rng.uniform(40, 80), rng.uniform(110, 160), rng.uniform(20, 50)), 21) if tree else \
            (tuple(float(v) for v in rng.uniform(50, 110, 3)), 11)
        cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), colour, -1)
        cv2.rectangle(lab, (x, horizon - bh), (x + bw, horizon), lid, -1)
        x += bw
    for _ in range(int(rng.integers(1, 4))):        # cars on the road, people on the walk
        cw, chh = int(rng.uniform(0.12, 0.25) * w), int(rng.uniform(0.08, 0.15) * h)
        cx, cy = int(rng.uniform(0, w - cw)), int(rng.uniform(walk, h - chh))
        car = (float(rng.uniform(0, 60)), 20.0, float(rng.uniform(100, 200)))
        cv2.rectangle(img, (cx, cy), (cx + cw, cy + chh), car, -1)
        cv2.rectangle(lab, (cx, cy), (cx + cw, cy + chh), 26, -1)
        px, py = int(rng.uniform(0, w - 8)), int(rng.uniform(horizon - 0.1 * h, walk))
        cv2.rectangle(img, (px, py - int(0.12 * h)), (px + 6, py), (220.0, 30.0, 60.0), -1)
        cv2.rectangle(lab, (px, py - int(0.12 * h)), (px + 6, py), 24, -1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def make_synthetic_cityscapes(root, num_train: int = 40, num_val: int = 10, size=(256, 128), seed: int = 0,
                              progress: bool = True) -> Dict[str, Path]:
    """Write (or reuse) ``leftImg8bit/``, ``gtFine/`` (label ids) and the list files
    ``list/train.lst`` and ``list/val.lst``. Returns ``root``, ``train`` and ``val`` (the lists)."""
    from .synthetic import _write_atomic
    root = Path(root)
    paths = {"root": root, "train": root / "list" / "train.lst", "val": root / "list" / "val.lst"}
    meta = {"train": num_train, "val": num_val, "size": list(size), "seed": seed}
    stamp = root / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return paths
    paths["train"].parent.mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", num_train, 0), ("val", num_val, 1_000_000)):
        lines = []
        for i in tqdm(range(count), desc=f"synthetic streets {split}", disable=not progress, leave=False):
            img, lab = _render_street(np.random.default_rng([seed, offset + i]), size)
            name = f"synth_{i:06d}_000019"
            rel_img = f"leftImg8bit/{split}/synth/{name}_leftImg8bit.png"
            rel_lab = f"gtFine/{split}/synth/{name}_gtFine_labelIds.png"
            for rel, data in ((rel_img, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)), (rel_lab, lab)):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                ok, buf = cv2.imencode(".png", data)
                if not ok:
                    raise RuntimeError("OpenCV could not encode a synthetic street image")
                _write_atomic(root / rel, buf.tobytes())
            lines.append(f"{rel_img} {rel_lab}")
        _write_atomic(paths[split], ("\n".join(lines) + "\n").encode())
    _write_atomic(stamp, json.dumps(meta).encode())
    return paths
