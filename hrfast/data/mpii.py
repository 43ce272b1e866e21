"""MPII Human Pose in the official HRNet layout: ``annot/{train,valid}.json`` (one record per
person: ``image``, ``center`` and ``scale`` in MATLAB's 1-based pixels, ``joints``,
``joints_vis``), ``images/``, and ``annot/gt_valid.mat``, the ground truth of the PCKh
evaluation (:mod:`hrfast.engine.pckh`).

Samples follow the official loader: the person's center moves down by 15 x scale pixels and
the scale grows by 1.25 (to keep the limbs in the crop), then center and joints go to 0-based
pixels. The 16 joints, their flip pairs and the body split are MPII's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from .coco import Augmentation, COCOKeypoints
from .keypoints import UNIFORM_SIGMA, KeypointSet

MPII_KEYPOINTS = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis",
                  "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
                  "left_shoulder", "left_elbow", "left_wrist")
# the names gt_valid.mat gives the same joints, in the same order
MAT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head", "rwri", "relb",
             "rsho", "lsho", "lelb", "lwri")
MPII16 = KeypointSet(
    MPII_KEYPOINTS,
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11), (11, 12),
              (12, 7), (7, 13), (13, 14), (14, 15)),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    sigmas=(UNIFORM_SIGMA,) * 16,          # OKS is not MPII's metric; used only if asked for
    joint_weights=(1.0,) * 16,
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15))


def mpii_paths(root, split: str) -> Dict[str, Path]:
    """The official layout's files of ``split`` (``train``, ``valid``) under ``root``."""
    root = Path(root)
    return {"ann": root / "annot" / f"{split}.json", "images": root / "images",
            "gt": root / "annot" / f"gt_{split}.mat"}


class MPIIKeypoints(COCOKeypoints):
    """Top-down person samples of an MPII annotation file; items as :class:`COCOKeypoints`
    (``image_id`` is the record's index in the file, the order of ``gt_<split>.mat``)."""

    kind = "mpii"

    def __init__(self, ann_file, image_dir, image_size: Sequence[int], heatmap_size: Sequence[int],
                 train: bool = False, sigma: float = 2.0, encoding: str = "msra", targets_on_device: bool = False,
                 augmentation: Augmentation = None, use_joint_weights: bool = False, seed: int = 0,
                 max_samples=None, num_joints: int = 16, gt_file=None):
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        for what, path in (("MPII annotation file", self.ann_file), ("MPII images folder", self.image_dir)):
            if not path.exists():
                raise FileNotFoundError(f"{what} not found: {path} (the official layout: annot/<set>.json, images/)")
        if num_joints != 16:
            raise ValueError(f"MODEL.NUM_JOINTS is {num_joints} but MPII has 16 keypoints: set MODEL.NUM_JOINTS to 16")
        self.gt_file = None if gt_file is None else Path(gt_file)
        self._set_sampling(image_size, heatmap_size, train, sigma, encoding, targets_on_device, augmentation, seed)
        self.num_joints, self.category_id, self.keypoints = 16, 1, MPII16
        self.flip_pairs = MPII16.flip_pairs
        self.joint_weights = torch.tensor(MPII16.joint_weights) if use_joint_weights else None
        self.records, self._files = self._records()
        if max_samples is not None:
            self.records = self.records[:max_samples]
        if not self.records:
            raise ValueError(f"no person samples in {self.ann_file}")

    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self._files[image_id]

    def _records(self):
        try:
            people = json.loads(self.ann_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"MPII annotation file {self.ann_file} is not valid json: {exc}") from None
        if not isinstance(people, list):
            raise ValueError(f"MPII annotation file {self.ann_file} must hold a list of people")
        records: List[Dict] = []
        files: List[str] = []
        for i, p in enumerate(people):
            try:
                records.append(_record(p, i))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"MPII annotation file {self.ann_file}: person {i} needs image, center, scale, "
                                 f"joints (16 x 2) and joints_vis (16): {exc!r}") from None
            files.append(str(p["image"]))
        return records, files


def _record(p: Dict, index: int) -> Dict:
    """One person as the official MPII loader prepares it (0-based pixels)."""
    center = np.asarray(p["center"], dtype=np.float64).reshape(2)
    s = float(p["scale"])
    scale = np.array([s, s])
    if center[0] != -1:
        center[1] += 15 * scale[1]
        scale = scale * 1.25
    center = center - 1
    joints = np.asarray(p.get("joints", np.zeros((16, 2))), dtype=np.float64).reshape(16, 2) - 1
    vis = np.asarray(p.get("joints_vis", np.zeros(16)), dtype=np.float64).reshape(16)
    return {"image_id": index, "center": center.astype(np.float32), "scale": scale.astype(np.float32),
            "joints": joints.astype(np.float32), "vis": (vis > 0).astype(np.float32), "score": 1.0,
            "area": float((scale[0] * 200) * (scale[1] * 200))}
