"""COCO person keypoints for top-down training and evaluation (pycocotools).

One sample is one person: a box (ground truth, or a detector's) turned into center/scale with
the official aspect-ratio padding and 1.25 enlargement, an affine crop of the image to the
network input, and its joints in input pixels. Training applies the official augmentation
(random scale and rotation, flip with the COCO pairs, half body). Each sample draws its random
numbers from its own generator, seeded by (seed, epoch, index). So a sample's augmentation does
not depend on the worker that loads it or on a restart, and a resumed run sees the same data.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from ..ops.targets import gaussian_targets
from .annotations import check_images_exist, check_keypoint_file
from .coco_meta import FLIP_PAIRS
from .keypoints import COCO17, KeypointSet
from .transforms import (
    affine_points,
    box_overlaps_image,
    box_to_center_scale,
    get_affine_transform,
    read_image_rgb,
    to_tensor,
)
from .wholebody import WHOLEBODY133, flatten_wholebody, is_wholebody


@dataclass
class Augmentation:
    """The official SimpleBaseline/HRNet training augmentation (COCO defaults)."""
    scale_factor: float = 0.35     # scale *= clip(1 + N(0, sf), 1 - sf, 1 + sf)
    rotation_factor: float = 45.0  # degrees: clip(N(0, rf), -2 rf, 2 rf), applied with prob_rotation
    prob_rotation: float = 0.6
    flip: bool = True              # horizontal flip with probability 0.5
    prob_half_body: float = 0.3
    num_joints_half_body: int = 8  # half body only when more joints than this are visible


class COCOKeypoints(Dataset):
    """Top-down person samples of a COCO keypoints file.

    Args:
        ann_file: person_keypoints json (COCO format).
        image_dir: folder of the images named in ``ann_file``.
        image_size: network input (width, height); heatmap_size: (width, height).
        train: apply augmentation (ground-truth boxes only).
        det_file: detector results json (list of {image_id, bbox, score, category_id}); when
            given (and not ``train``) the samples are the detections with score >= image_thre.
        image_thre: minimum detection score (official default 0.0; COCO test uses 0.0).
        sigma, encoding: Gaussian targets (``hrfast.ops.gaussian_targets``).
        targets_on_device: skip targets in the workers (the training step makes them).
        use_joint_weights: multiply target weights by the keypoint set's per-joint weights.
        max_samples: keep only the first N samples (quick runs).
        num_joints: the keypoints the model predicts (``MODEL.NUM_JOINTS``); the file's
            category must name as many, else a ``ValueError``.
        flip_pairs, sigmas, joint_weights, upper_body: what the file cannot say about its
            keypoints (config ``DATASET.*``); None derives them (:mod:`hrfast.data.keypoints`).
    ``keypoints`` is the resulting :class:`~hrfast.data.keypoints.KeypointSet`: names and
    skeleton from the file's category, and ``category_id`` the category the samples come from.
    Each item is a dict: ``image`` (3, H, W) float32 ImageNet-normalized, ``joints`` (K, 2)
    in input pixels, ``joints_vis`` (K,), and ``target`` (K, h, w) / ``target_weight`` (K,)
    unless ``targets_on_device``; plus ``center``, ``scale`` (2,), ``score``, ``area``,
    ``image_id`` for evaluation.
    """

    def __init__(self, ann_file, image_dir, image_size: Sequence[int], heatmap_size: Sequence[int],
                 train: bool = False, det_file=None, image_thre: float = 0.0, sigma: float = 2.0,
                 encoding: str = "msra", targets_on_device: bool = False,
                 augmentation: Optional[Augmentation] = None, use_joint_weights: bool = False,
                 seed: int = 0, max_samples: Optional[int] = None, num_joints: int = 17,
                 flip_pairs=None, sigmas=None, joint_weights=None, upper_body=None):
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"ann_file not found: {self.ann_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir not found: {self.image_dir}")
        try:
            with quiet():
                self.coco = COCO(str(self.ann_file))
                self.wholebody = is_wholebody(self.coco.dataset)
                if self.wholebody:        # the five part fields as 133 keypoints
                    flatten_wholebody(self.coco.dataset)
                    self.coco.createIndex()
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
            raise ValueError(f"ann_file {self.ann_file} is not a COCO keypoints json: {exc!r}") from None
        self._set_sampling(image_size, heatmap_size, train, sigma, encoding, targets_on_device, augmentation, seed)
        self.num_joints = num_joints
        self.category_id, self.keypoints = self._keypoint_set(
            num_joints, dict(flip_pairs=flip_pairs, sigmas=sigmas, joint_weights=joint_weights, upper_body=upper_body))
        check_keypoint_file(self.coco.dataset, self.ann_file, self.category_id, num_joints)
        self.flip_pairs = self.keypoints.flip_pairs
        self.joint_weights = torch.tensor(self.keypoints.joint_weights) if use_joint_weights else None
        if det_file is not None and not train:
            self.records = self._detection_records(Path(det_file), image_thre)
        else:
            self.records = self._gt_records()
        if max_samples is not None:
            self.records = self.records[:max_samples]
        if not self.records:
            raise ValueError(f"no usable person samples in {self.ann_file}"
                             + (f" with detections {det_file}" if det_file else ""))
        check_images_exist(self.image_dir, sorted({self.coco.imgs[r["image_id"]]["file_name"] for r in self.records}))

    def _set_sampling(self, image_size, heatmap_size, train, sigma, encoding, targets_on_device, augmentation,
                      seed) -> None:
        """How samples are made: sizes, augmentation, targets, the random stream."""
        self.image_size = tuple(int(v) for v in image_size)
        self.heatmap_size = tuple(int(v) for v in heatmap_size)
        self.aspect_ratio = self.image_size[0] / self.image_size[1]
        self.train, self.sigma, self.encoding = train, float(sigma), encoding
        self.targets_on_device = targets_on_device
        self.aug = augmentation or Augmentation()
        self.seed, self.epoch = int(seed), 0

    def _keypoint_set(self, num_joints: int, known: Dict):
        """(category id, KeypointSet) of the file's keypoint category; a file that names no
        keypoints gets COCO's 17 (what the official loader assumes) or unnamed joints."""
        categories = [c for c in self.coco.dataset.get("categories", []) if c.get("keypoints")]
        if categories:
            cat = next((c for c in categories if c.get("id") == 1), categories[0])
            names = cat["keypoints"]
            if len(names) != num_joints:
                raise ValueError(f"MODEL.NUM_JOINTS is {num_joints} but {self.ann_file.name} category "
                                 f"{cat.get('name', cat.get('id'))!r} has {len(names)} keypoints: set "
                                 f"MODEL.NUM_JOINTS to {len(names)}")
            if self.wholebody and not any(known.values()):
                return int(cat.get("id", 1)), WHOLEBODY133
            return int(cat.get("id", 1)), KeypointSet.from_category(cat, **known)
        if num_joints == 17 and not any(known.values()):
            return 1, COCO17
        return 1, KeypointSet.unnamed(num_joints, **known)

    # -- records -------------------------------------------------------------------------
    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _gt_records(self) -> List[Dict]:
        try:
            return self._gt_records_unchecked()
        except KeyError as exc:   # pycocotools indexes the keys it needs without a message
            raise ValueError(f"ann_file {self.ann_file}: an annotation or image lacks the key {exc.args[0]!r} "
                             f"(COCO keypoints need id, image_id, category_id, iscrowd, keypoints, bbox; "
                             f"images id, file_name)") from None

    def _gt_records_unchecked(self) -> List[Dict]:
        records, skipped = [], {"no visible joints": 0, "empty box": 0}
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            w, h = info.get("width"), info.get("height")
            for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=False)):
                if ann.get("category_id", 1) != self.category_id:
                    continue
                kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(self.num_joints, 3)  # checked
                if kps[:, 2].max() <= 0:
                    skipped["no visible joints"] += 1
                    continue
                box = _clean_box(ann.get("bbox", [0, 0, 0, 0]), w, h)
                if box is None:
                    skipped["empty box"] += 1
                    continue
                center, scale = box_to_center_scale(box, self.aspect_ratio)
                records.append({"image_id": image_id, "center": center, "scale": scale,
                                "joints": kps[:, :2].astype(np.float32),
                                "vis": (kps[:, 2] > 0).astype(np.float32),
                                "score": 1.0, "area": float(ann.get("area", box[2] * box[3]))})
        for why, n in skipped.items():
            if n:
                warnings.warn(f"{self.ann_file.name}: skipped {n} person annotations ({why})", stacklevel=3)
        return records

    def _detection_records(self, det_file: Path, image_thre: float) -> List[Dict]:
        dets = read_json(det_file, "det_file")
        if not isinstance(dets, list):
            raise ValueError(f"det_file {det_file} must hold a list of detections")
        records, empty, outside = [], 0, 0
        for i, d in enumerate(dets):
            bbox = d.get("bbox") if isinstance(d, dict) else None
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and "image_id" in d
                    and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
                raise ValueError(f"det_file {det_file}: detection {i} must be {{image_id, bbox: [x, y, w, h] "
                                 f"finite, score}}, got {str(d)[:80]}")
            if d.get("category_id", 1) != self.category_id or d["image_id"] not in self.coco.imgs:
                continue
            if float(d.get("score", 1.0)) < image_thre:
                continue
            # as the official _load_coco_person_detection_results: the detector's box untouched
            # (no clipping, no shrink); only a box without area cannot be cropped
            box = [float(v) for v in bbox]
            if box[2] <= 0 or box[3] <= 0:
                empty += 1
                continue
            if not _overlaps_image(box, self.coco.imgs[d["image_id"]]):
                outside += 1       # no pixel of the person is in the image: nothing to see
                continue
            center, scale = box_to_center_scale(box, self.aspect_ratio)
            records.append({"image_id": d["image_id"], "center": center, "scale": scale,
                            "joints": np.zeros((self.num_joints, 2), np.float32),
                            "vis": np.zeros(self.num_joints, np.float32),
                            "score": float(d.get("score", 1.0)), "area": float(box[2] * box[3])})
        if empty:
            warnings.warn(f"{det_file.name}: skipped {empty} detections with an empty box", stacklevel=3)
        if outside:
            warnings.warn(f"{det_file.name}: dropped {outside} detections wholly outside their image", stacklevel=3)
        return records

    # -- samples ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict:
        rec = self.records[index]
        image = read_image_rgb(self._image_path(rec["image_id"]))
        joints, vis = rec["joints"].copy(), rec["vis"].copy()
        center, scale, rot = rec["center"].copy(), rec["scale"].copy(), 0.0
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, joints, vis, center, scale, rot = self._augment(rng, image, joints, vis, center, scale)
        m = get_affine_transform(center, scale, rot, self.image_size)
        crop = cv2.warpAffine(image, m, self.image_size, flags=cv2.INTER_LINEAR)
        joints_in = affine_points(joints, m).astype(np.float32)
        item = {"image": to_tensor(crop), "joints": torch.from_numpy(joints_in),
                "joints_vis": torch.from_numpy(vis), "center": torch.from_numpy(rec["center"].astype(np.float32)),
                "scale": torch.from_numpy(rec["scale"].astype(np.float32)),
                "score": torch.tensor(rec["score"], dtype=torch.float32),
                "area": torch.tensor(rec["area"], dtype=torch.float32),
                "image_id": torch.tensor(rec["image_id"], dtype=torch.long)}
        if not self.targets_on_device:
            t, w = gaussian_targets(item["joints"][None], item["joints_vis"][None], self.image_size,
                                    self.heatmap_size, self.sigma, self.encoding,
                                    joint_weights=self.joint_weights)
            item["target"], item["target_weight"] = t[0], w[0]
        return item

    def _augment(self, rng, image, joints, vis, center, scale):
        a = self.aug
        if (vis > 0).sum() > a.num_joints_half_body and rng.random() < a.prob_half_body:
            hb = half_body_box(joints, vis, self.aspect_ratio, rng, self.keypoints)
            if hb is not None:
                center, scale = hb
        sf, rf = a.scale_factor, a.rotation_factor
        scale = scale * float(np.clip(rng.normal() * sf + 1, 1 - sf, 1 + sf))
        rot = float(np.clip(rng.normal() * rf, -2 * rf, 2 * rf)) if rng.random() <= a.prob_rotation else 0.0
        if a.flip and rng.random() <= 0.5:
            width = image.shape[1]
            image = image[:, ::-1]
            joints, vis = flip_joints(joints, vis, width, self.flip_pairs)
            center = center.copy()
            center[0] = width - center[0] - 1
        return image, joints, vis, center, scale, rot


def read_json(path, what: str):
    """Parse a json file; a missing file or bad json is an error naming ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid json: {exc}") from None


def flip_joints(joints: np.ndarray, vis: np.ndarray, width: int, pairs=FLIP_PAIRS):
    """Mirror (K, 2) joints of an image ``width`` pixels wide and swap the left/right pairs."""
    joints = joints.copy()
    vis = vis.copy()
    joints[:, 0] = width - joints[:, 0] - 1
    for a, b in pairs:
        joints[[a, b]] = joints[[b, a]]
        vis[[a, b]] = vis[[b, a]]
    return joints, vis


def half_body_box(joints, vis, aspect_ratio, rng, keypoints: KeypointSet = COCO17):
    """The official half-body crop: center/scale around the visible upper or lower body."""
    upper = [k for k in keypoints.upper_body if k < len(vis) and vis[k] > 0]
    lower = [k for k in keypoints.lower_body if k < len(vis) and vis[k] > 0]
    pick = upper if (rng.random() < 0.5 and len(upper) > 2) else (lower if len(lower) > 2 else upper)
    if len(pick) < 2:
        return None
    pts = joints[pick]
    center = pts.mean(0).astype(np.float32)
    lo, hi = pts.min(0), pts.max(0)
    w, h = hi[0] - lo[0], hi[1] - lo[1]
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / 200.0, h / 200.0], np.float32) * 1.5
    return center, scale


def _overlaps_image(box, info: Dict) -> bool:
    """Whether an [x, y, w, h] box has any part inside its image (True when the file gives no size)."""
    if info.get("width") is None or info.get("height") is None:
        return True
    return bool(box_overlaps_image(*box, info["width"], info["height"]))


def _clean_box(bbox, width, height):
    """The official box sanitation: clip to the image; None when nothing is left."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = x1 + max(0.0, w - 1), y1 + max(0.0, h - 1)
    if width is not None and height is not None:
        x2, y2 = min(width - 1.0, x2), min(height - 1.0, y2)
    if w <= 0 or h <= 0 or x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


class quiet:
    """Silence pycocotools' prints ("loading annotations into memory...")."""

    def __enter__(self):
        self._cm = contextlib.redirect_stdout(io.StringIO())
        self._cm.__enter__()

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
