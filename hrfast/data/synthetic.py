"""A deterministic synthetic COCO-keypoints dataset of rendered human-like figures.

Each image has a textured, cluttered background and one to three figures. Every figure has
the 17 COCO joints: a head with eyes, nose and ears, a filled torso, and limbs of varied width
and colour at random (human-like) angles. Figures face the camera, so a figure's left side
is on the image right, as for a person photographed from the front. Occluders and overlapping
figures hide some joints: those are labelled but not visible (v=1). Joints outside the image
are unlabelled (v=0). ``area`` is the figure's visible mask area in pixels, as COCO's
segmentation area. The output goes through exactly the same COCO code path as real data:
``images/<split>/*.jpg``, ``annotations/person_keypoints_<split>.json`` and, for val,
``annotations/person_detections_<split>.json`` (jittered ground-truth boxes plus a few false
positives, in the COCO detection-results format).

``keypoints=5`` writes a COCO-format set of another keypoint count from the same figures:
head (the nose), hands (the wrists) and feet (the ankles), with its own names and skeleton in
the category, so the code paths that must not assume COCO's 17 joints are tested end to end.
``keypoints=133`` draws feet, faces and hands on the figures
(:mod:`hrfast.data.synthetic_wholebody`) and writes COCO-WholeBody v1.0 files
(``annotations/coco_wholebody_<split>_v1.0.json``, the parts in their own fields).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..extras import require
from .coco_meta import COCO_KEYPOINTS, COCO_SKELETON
from .mpii import MAT_NAMES
from .synthetic_wholebody import draw_parts, wholebody_fields
from .wholebody import NUM_WHOLEBODY, WHOLEBODY133, WHOLEBODY_NAMES

GENERATOR_VERSION = 1
# keypoint sets the generator writes: count -> (names, 1-based skeleton, indices into COCO's 17;
# None: COCO-WholeBody's 133, with the feet, faces and hands drawn on the figures)
KEYPOINT_SETS = {
    17: (tuple(COCO_KEYPOINTS), tuple(COCO_SKELETON), tuple(range(17))),
    5: (("head", "left_hand", "right_hand", "left_foot", "right_foot"),
        ((1, 2), (1, 3), (1, 4), (1, 5)), (0, 9, 10, 15, 16)),
    NUM_WHOLEBODY: (WHOLEBODY_NAMES, tuple((a + 1, b + 1) for a, b in WHOLEBODY133.skeleton), None),
}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grid = rng.uniform(40, 220, size=(rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(4, 12)):          # clutter: shapes and limb-like strokes
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            p1 = rng.integers(0, [w, h])
            p2 = p1 + rng.integers(-60, 60, 2)
            cv2.rectangle(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, -1)
        elif kind == 1:
            c = rng.integers(0, [w, h])
            cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(4, 30)), color, -1)
        else:
            p1 = rng.integers(0, [w, h])
            p2 = p1 + rng.integers(-80, 80, 2)
            cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, int(rng.integers(2, 9)))
    img += rng.normal(0, 6, img.shape).astype(np.float32)     # sensor-like noise / texture
    return img


def _figure(rng: np.random.Generator, cx: float, hip_y: float, height: float) -> np.ndarray:
    """17 COCO joints (x, y) of a front-facing figure of ``height`` pixels."""
    lean = rng.normal(0, math.radians(8))
    up = np.array([math.sin(lean), -math.cos(lean)])
    right = np.array([math.cos(lean), math.sin(lean)])      # towards the figure's left side
    hip_c = np.array([cx, hip_y])
    neck = hip_c + up * 0.30 * height
    j = np.zeros((17, 2))
    sw, pw = rng.uniform(0.22, 0.30) * height, rng.uniform(0.15, 0.20) * height
    j[5], j[6] = neck + right * sw / 2, neck - right * sw / 2          # l/r shoulder
    j[11], j[12] = hip_c + right * pw / 2, hip_c - right * pw / 2      # l/r hip
    head = neck + up * 0.13 * height
    r = 0.075 * height
    yaw = rng.uniform(-0.3, 0.3)
    j[0] = head - up * 0.15 * r + right * yaw * r                      # nose
    j[1], j[2] = head + up * 0.25 * r + right * (0.38 + yaw) * r, head + up * 0.25 * r - right * (0.38 - yaw) * r
    j[3], j[4] = head + right * 0.95 * r, head - right * 0.95 * r      # ears
    down = -up

    def chain(root, side, l1, l2, a1, a2):
        d1 = down * math.cos(a1) + right * side * math.sin(a1)
        d2 = down * math.cos(a1 + a2) + right * side * math.sin(a1 + a2)
        mid = root + d1 * l1
        return mid, mid + d2 * l2

    for side, (s, e, w) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):       # arms
        j[e], j[w] = chain(j[s], side, 0.17 * height, 0.15 * height,
                           rng.uniform(-0.3, 2.6), rng.uniform(-0.6, 2.0))
    for side, (hh, k, a) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):  # legs
        j[k], j[a] = chain(j[hh], side, 0.24 * height, 0.23 * height,
                           rng.uniform(-0.25, 0.6), rng.uniform(-0.7, 0.3))
    return j


def _draw_figure(img: np.ndarray, rng: np.random.Generator, j: np.ndarray, height: float) -> np.ndarray:
    """Draw the figure; return its mask (H, W) bool."""
    mask = np.zeros(img.shape[:2], np.uint8)
    pt = lambda p: (int(round(p[0] * 4)), int(round(p[1] * 4)))      # noqa: E731 (shift=2 sub-pixel)
    col = lambda: tuple(float(c) for c in rng.uniform(0, 255, 3))     # noqa: E731
    skin = tuple(float(c) for c in np.array([rng.uniform(90, 240), rng.uniform(60, 200), rng.uniform(40, 170)]))
    top, bottom, shoes = col(), col(), col()
    sleeve = skin if rng.random() < 0.5 else top

    def limb(a, b, color, width):
        w_ = max(2, int(width))
        cv2.line(img, pt(j[a]), pt(j[b]), color, w_, cv2.LINE_AA, shift=2)
        cv2.line(mask, pt(j[a]), pt(j[b]), 1, w_, cv2.LINE_8, shift=2)

    torso = np.array([j[5], j[6], j[12], j[11]])
    cv2.fillPoly(img, [np.round(torso * 4).astype(np.int32)], top, cv2.LINE_AA, shift=2)
    cv2.fillPoly(mask, [np.round(torso * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    lw = rng.uniform(0.045, 0.075) * height
    for a, b in ((11, 13), (12, 14)):
        limb(a, b, bottom, lw * 1.3)
    for a, b in ((13, 15), (14, 16)):
        limb(a, b, bottom if rng.random() < 0.7 else skin, lw * 1.1)
    for a in (15, 16):                              # feet
        c = pt(j[a])
        cv2.circle(img, c, int(lw * 4 * 0.7), shoes, -1, cv2.LINE_AA, shift=2)
        cv2.circle(mask, c, int(lw * 4 * 0.7), 1, -1, shift=2)
    for a, b in ((5, 7), (6, 8)):
        limb(a, b, top, lw * 1.1)
    for a, b in ((7, 9), (8, 10)):
        limb(a, b, sleeve, lw * 0.9)
    for a in (9, 10):                               # hands
        cv2.circle(img, pt(j[a]), int(lw * 4 * 0.6), skin, -1, cv2.LINE_AA, shift=2)
        cv2.circle(mask, pt(j[a]), int(lw * 4 * 0.6), 1, -1, shift=2)
    r = 0.075 * height
    head = (j[3] + j[4]) / 2
    limb(5, 6, top, lw)                              # shoulders line (neck base)
    for a in (3, 4):                                # ears, then the head over them
        cv2.circle(img, pt(j[a]), int(r * 4 * 0.3), skin, -1, cv2.LINE_AA, shift=2)
        cv2.circle(mask, pt(j[a]), int(r * 4 * 0.3), 1, -1, shift=2)
    cv2.circle(img, pt(head), int(r * 4), skin, -1, cv2.LINE_AA, shift=2)
    cv2.circle(mask, pt(head), int(r * 4), 1, -1, shift=2)
    hair = col()
    cv2.ellipse(img, pt(head), (int(r * 4), int(r * 4 * 0.6)), 0, 180, 360, hair, -1, cv2.LINE_AA, shift=2)
    for a in (1, 2):
        cv2.circle(img, pt(j[a]), max(4, int(r * 4 * 0.14)), (20, 20, 30), -1, cv2.LINE_AA, shift=2)
    cv2.circle(img, pt(j[0]), max(4, int(r * 4 * 0.12)), (150, 50, 50), -1, cv2.LINE_AA, shift=2)
    return mask.astype(bool)


def render_image(rng: np.random.Generator, size: Tuple[int, int], max_people: int = 3, wholebody: bool = False
                 ) -> Tuple[np.ndarray, List[Dict]]:
    """One image (H, W, 3) uint8 RGB and its person annotations (COCO fields, no ids): 17
    keypoints each, or the 133 of COCO-WholeBody with ``wholebody`` (feet, face and hands
    drawn)."""
    w, h = size
    img = _background(rng, h, w)
    n = int(rng.integers(1, max_people + 1))
    people, masks = [], []
    for _ in range(n):
        height = rng.uniform(0.45, 0.95) * h
        cx = rng.uniform(0.1, 0.9) * w
        hip_y = rng.uniform(0.4, 0.75) * h
        j = _figure(rng, cx, hip_y, height)
        masks.append(_draw_figure(img, rng, j, height))
        if wholebody:
            extra, drawn = draw_parts(img, rng, j, height)
            masks[-1] |= drawn
            j = np.vstack([j, extra])
        people.append(j)
    occluded = np.zeros(img.shape[:2], bool)
    if rng.random() < 0.35:                        # a foreground occluder over some figure
        p = people[int(rng.integers(0, n))]
        c = p[int(rng.integers(0, 17))]
        half = rng.uniform(0.05, 0.15, 2) * h
        x0, y0 = (c - half).astype(int)
        x1, y1 = (c + half).astype(int)
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
        occluded[max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = True
    img = np.clip(img, 0, 255).astype(np.uint8)
    anns = []
    for i, (j, m) in enumerate(zip(people, masks)):
        cover = occluded.copy()
        for later in masks[i + 1:]:
            cover |= later
        visible_mask = m & ~cover
        kps = np.zeros((len(j), 3))
        for k in range(len(j)):
            x, y = j[k]
            if not (0 <= x < w and 0 <= y < h):
                continue                           # outside the image: unlabelled
            hidden = cover[int(y), int(x)]
            kps[k] = [x, y, 1 if hidden else 2]
        ys, xs = np.nonzero(visible_mask)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        anns.append({"bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                     "area": float(visible_mask.sum()), "iscrowd": 0,
                     "num_keypoints": int((kps[:, 2] > 0).sum()), "category_id": 1,
                     "keypoints": [round(float(v), 2) for v in kps.reshape(-1)]})
    return img, anns


def _keypoint_subset(ann: Dict, subset: Tuple[int, ...]) -> Dict:
    """``ann`` with only the keypoints ``subset`` of its 17."""
    if len(subset) == 17:
        return ann
    kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)[list(subset)]
    return {**ann, "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
            "num_keypoints": int((kps[:, 2] > 0).sum())}


def _write_atomic(path: Path, data: bytes) -> None:
    # Several processes (torchrun ranks) may generate the same deterministic dataset at once:
    # each file appears whole, by rename, so no reader sees a partly written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_synthetic_coco(root, num_train: int = 400, num_val: int = 80, image_size=(256, 256),
                        seed: int = 0, progress: bool = True, keypoints: int = 17) -> Dict[str, Path]:
    """Write (or reuse, when the same parameters were written before) the dataset under ``root``,
    with ``keypoints`` (a count of :data:`KEYPOINT_SETS`) per figure.

    Returns the paths: ``train_ann``, ``train_images``, ``val_ann``, ``val_images``, ``val_dets``.
    """
    if keypoints not in KEYPOINT_SETS:
        raise ValueError(f"keypoints must be one of {sorted(KEYPOINT_SETS)} (the synthetic keypoint sets), "
                         f"got {keypoints!r}")
    names, skeleton, subset = KEYPOINT_SETS[keypoints]
    root = Path(root)
    meta = {"version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val,
            "image_size": list(image_size), "seed": seed, "keypoints": keypoints}
    ann = "coco_wholebody_{}_v1.0.json" if subset is None else "person_keypoints_{}.json"   # the official names
    paths = {"train_ann": root / "annotations" / ann.format("train"),
             "train_images": root / "images" / "train",
             "val_ann": root / "annotations" / ann.format("val"),
             "val_images": root / "images" / "val",
             "val_dets": root / "annotations" / "person_detections_val.json"}
    stamp = root / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == meta and all(p.exists() for p in paths.values()):
        return paths
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    if subset is None:       # COCO-WholeBody's category names the body's 17, as the official files do
        names, skeleton = COCO_KEYPOINTS, COCO_SKELETON
    categories = [{"id": 1, "name": "person", "supercategory": "person",
                   "keypoints": list(names), "skeleton": [list(s) for s in skeleton]}]
    for split, count, offset in (("train", num_train, 0), ("val", num_val, 1_000_000)):
        images, anns, dets = _render_split(paths[f"{split}_images"], count, offset, image_size, seed, subset,
                                           progress, split)
        doc = {"info": {"description": "hrfast synthetic figures", "version": GENERATOR_VERSION},
               "licenses": [], "images": images, "annotations": anns, "categories": categories}
        _write_atomic(paths[f"{split}_ann"], json.dumps(doc).encode())
        if split == "val":
            _write_atomic(paths["val_dets"], json.dumps(dets).encode())
    _write_atomic(stamp, json.dumps(meta).encode())
    return paths


def _render_split(out: Path, count: int, offset: int, image_size, seed: int, subset, progress: bool, split: str):
    """Render ``count`` images into ``out``: (images, annotations, detections) as COCO lists.
    ``subset``: the COCO joints kept, or None for COCO-WholeBody's fields."""
    out.mkdir(parents=True, exist_ok=True)
    images, anns, dets = [], [], []
    for i in tqdm(range(count), desc=f"synthetic {split}", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, offset + i])     # each image on its own stream
        img, people = render_image(rng, image_size, wholebody=subset is None)
        image_id = offset + i + 1
        name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode synthetic image {name}")
        _write_atomic(out / name, buf.tobytes())
        images.append({"id": image_id, "file_name": name, "width": image_size[0], "height": image_size[1]})
        for p in people:
            p = wholebody_fields(p) if subset is None else _keypoint_subset(p, subset)
            if subset is not None and len(subset) < 17 and p["num_keypoints"] == 0:   # none labelled
                continue
            anns.append({"id": len(anns) + 1 + offset, "image_id": image_id, **p})
            x, y, bw, bh = p["bbox"]
            jit = rng.normal(0, 0.05, 4) * [bw, bh, bw, bh]
            dets.append({"image_id": image_id, "category_id": 1, "score": float(rng.uniform(0.8, 1.0)),
                         "bbox": [float(x + jit[0]), float(y + jit[1]), float(bw + jit[2]), float(bh + jit[3])]})
        for _ in range(int(rng.integers(0, 2))):               # a false positive, low score
            bw, bh = rng.uniform(20, 80, 2)
            dets.append({"image_id": image_id, "category_id": 1, "score": float(rng.uniform(0.05, 0.4)),
                         "bbox": [float(rng.uniform(0, image_size[0] - bw)),
                                  float(rng.uniform(0, image_size[1] - bh)), float(bw), float(bh)]})
    return images, anns, dets


def _mpii_joints(kps17: np.ndarray) -> np.ndarray:
    """(16, 3) MPII joints (x, y, labelled) of a figure's (17, 3) COCO joints: the limbs map
    one to one; pelvis and thorax are the middles of the hips and shoulders, and the upper
    neck and head top lie on the line from the thorax through the nose."""
    def at(*ks):
        pts = kps17[list(ks)]
        return np.array([*pts[:, :2].mean(0), float((pts[:, 2] > 0).all())])
    thorax, pelvis, nose = at(5, 6), at(11, 12), kps17[0]
    up = nose[:2] - thorax[:2]
    labelled = float(thorax[2] > 0 and nose[2] > 0)
    neck = np.array([*(thorax[:2] + 0.4 * up), labelled])
    top = np.array([*(nose[:2] + 0.7 * up), labelled])
    order = [at(16), at(14), at(12), at(11), at(13), at(15), pelvis, thorax, neck, top,
             at(10), at(8), at(6), at(5), at(7), at(9)]
    return np.stack(order)


def make_synthetic_mpii(root, num_train: int = 400, num_val: int = 80, image_size=(256, 256),
                        seed: int = 0, progress: bool = True) -> Dict[str, Path]:
    """The figures in MPII's official layout under ``root``: ``annot/{train,valid}.json``,
    ``images/``, and ``annot/gt_valid.mat`` for PCKh (head boxes around the head top and the
    upper neck). Reused when the same parameters were written before. Returns the paths:
    ``root``, ``train_ann``, ``val_ann``, ``images``, ``gt``."""
    savemat = require("scipy.io", "the synthetic MPII data (its gt_valid.mat)").savemat

    root = Path(root)
    meta = {"version": GENERATOR_VERSION, "format": "mpii", "num_train": num_train, "num_val": num_val,
            "image_size": list(image_size), "seed": seed}
    paths = {"root": root, "train_ann": root / "annot" / "train.json", "val_ann": root / "annot" / "valid.json",
             "images": root / "images", "gt": root / "annot" / "gt_valid.mat"}
    stamp = root / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == meta and all(p.exists() for p in paths.values()):
        return paths
    paths["images"].mkdir(parents=True, exist_ok=True)
    (root / "annot").mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", num_train, 0), ("valid", num_val, 1_000_000)):
        people, gt_joints, head_boxes = [], [], []
        for i in tqdm(range(count), desc=f"synthetic mpii {split}", disable=not progress, leave=False):
            rng = np.random.default_rng([seed, offset + i])
            img, anns = render_image(rng, image_size)
            name = f"{offset + i + 1:09d}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise RuntimeError(f"OpenCV could not encode synthetic image {name}")
            _write_atomic(paths["images"] / name, buf.tobytes())
            for ann in anns:
                j = _mpii_joints(np.asarray(ann["keypoints"], np.float64).reshape(17, 3))
                if j[:, 2].sum() == 0 or j[9, 2] == 0:      # PCKh needs the head
                    continue
                x, y, w, h = ann["bbox"]
                s = max(w, h) / 200.0 / 1.25     # the loader's x1.25 and +15 s then frame the box
                people.append({"image": name, "scale": s, "center": [x + w / 2 + 1, y + h / 2 - 15 * s + 1],
                               "joints": (j[:, :2] + 1).round(2).tolist(), "joints_vis": j[:, 2].astype(int).tolist()})
                size = np.linalg.norm(j[9, :2] - j[8, :2])
                mid = (j[9, :2] + j[8, :2]) / 2 + 1
                gt_joints.append(j)
                head_boxes.append([mid - size / 2, mid + size / 2])
        _write_atomic(paths["train_ann" if split == "train" else "val_ann"], json.dumps(people).encode())
        if split == "valid":
            j = np.stack(gt_joints)                                   # (N, 16, 3)
            names = np.empty((1, 16), dtype=object)
            names[0, :] = list(MAT_NAMES)
            savemat(str(paths["gt"]), {"dataset_joints": names, "jnt_missing": (1 - j[:, :, 2]).T,
                                       "pos_gt_src": (j[:, :, :2] + 1).transpose(1, 2, 0),
                                       "headboxes_src": np.asarray(head_boxes).transpose(1, 2, 0)})
    _write_atomic(stamp, json.dumps(meta).encode())
    return paths
