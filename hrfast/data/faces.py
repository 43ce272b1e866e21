"""Facial landmarks in the layout of HRNet-Facial-Landmark-Detection: CSV annotation lists.

Each list has a header row, then one face per row: ``image_name, scale, center_w, center_h,
x0, y0, x1, y1, ...`` (300W, 68 points; WFLW, 98; COFW, 29), or with ``box_size`` after
``scale`` (AFLW, 19). ``image_name`` is relative to the image root; ``scale`` is the face's
size in units of 200 pixels, and the crop is 1.25 times it, square, as the official loader
makes it. Training jitters the scale (x [0.75, 1.25]), rotates (+-30 degrees, 60% of the
samples) and flips with the set's mirror pairs (the iBUG-68 ones for 300W; none known to
hrfast for the other layouts, which then train without flips).

COFW's lists are its MATLAB files instead (``COFW_train_color.mat``, ``COFW_test_color.mat``:
the images in ``IsTr`` / ``IsT``, 29 x, 29 y and 29 occlusion flags per face in ``phisTr`` /
``phisT``); the face's box is the whole-pixel box around its points.

Two pipelines crop the faces. ``"official"`` is the face repository's own (integer box,
byte-scaled Pillow resize, its flip ``x -> W - x``, targets at whole heatmap pixels; see
:mod:`hrfast.data.face_official`): an official checkpoint gives its published NME only through
it. ``"affine"`` is the pose code's sub-pixel warp, with no rounding anywhere.

``make_synthetic_faces`` writes a 300W-format dataset of rendered faces, offline.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import face_official as official
from .seeded import SeededDataset
from .transforms import affine_points, get_affine_transform, read_image_rgb, to_tensor
from .wholebody import _face_pairs

# landmarks per face -> (dataset, the two points whose distance normalises NME; None: the box)
LAYOUTS: Dict[int, Tuple[str, Optional[Tuple[int, int]]]] = {
    68: ("300w", (36, 45)), 98: ("wflw", (60, 72)), 29: ("cofw", (8, 9)), 19: ("aflw", None)}
CROP = 1.25          # the crop is this many times the annotated face scale
PIPELINES = ("official", "affine")


def read_face_csv(path, num_points: int) -> List[Dict]:
    """The faces of a CSV list: ``image``, ``scale`` (200 px units), ``center`` (x, y),
    ``points`` (K, 2) in image pixels and ``box_size`` (AFLW's, else 0)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face annotation list not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    faces = []
    for n, row in enumerate(rows, start=2):
        aflw = len(row) == 5 + 2 * num_points
        if len(row) != 4 + 2 * num_points and not aflw:
            raise ValueError(f"{path}:{n}: expected {4 + 2 * num_points} columns (image, scale, center_w, center_h, "
                             f"{num_points} x, y), or {5 + 2 * num_points} with AFLW's box_size; got {len(row)}")
        values = [float(v) for v in row[1:]]
        box, rest = (values[1], values[2:]) if aflw else (0.0, values[1:])
        faces.append({"image": row[0], "scale": values[0], "center": np.array(rest[:2]), "box_size": box,
                      "points": np.array(rest[2:], dtype=np.float64).reshape(num_points, 2)})
    if not faces:
        raise ValueError(f"{path} lists no faces")
    return faces


def read_cofw_mat(path) -> List[Dict]:
    """The faces of a COFW MATLAB file: as :func:`read_face_csv`, with the image itself in
    ``pixels`` (H, W, 3) uint8 (grey ones repeated to 3 channels) and ``image`` naming its
    index; centre and scale from the box around the 29 points, as the face repository's."""
    from ..extras import require
    io = require("scipy", "COFW's .mat annotations").io
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COFW annotation file not found: {path}")
    mat = io.loadmat(str(path))
    keys = next(((i, p) for i, p in (("IsTr", "phisTr"), ("IsT", "phisT")) if i in mat and p in mat), None)
    if keys is None:
        found = sorted(k for k in mat if not k.startswith("_"))
        raise ValueError(f"{path}: expected COFW's IsTr/phisTr or IsT/phisT, found {found}")
    images, phis = mat[keys[0]].reshape(-1), np.asarray(mat[keys[1]], dtype=np.float64)
    if phis.ndim != 2 or phis.shape[1] < 58 or len(phis) != len(images):
        raise ValueError(f"{path}: {keys[1]} must be (N, 87) for the N={len(images)} images of {keys[0]}, "
                         f"got {phis.shape}")
    faces = []
    for i, (img, row) in enumerate(zip(images, phis)):
        img = np.asarray(img, dtype=np.uint8)
        pts = row[:58].reshape(2, 29).T.copy()
        center, scale = official.cofw_box(pts)
        faces.append({"image": f"{path.name}#{i}", "pixels": np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img,
                      "scale": scale, "center": center, "points": pts, "box_size": 0.0})
    return faces


def read_face_list(path, num_points: int) -> List[Dict]:
    """A CSV list, or COFW's .mat (29 points)."""
    if Path(path).suffix.lower() != ".mat":
        return read_face_csv(path, num_points)
    if num_points != 29:
        raise ValueError(f"{path} is COFW's (29 landmarks), but the model predicts {num_points}")
    return read_cofw_mat(path)


def write_face_csv(path, faces: Sequence[Dict]) -> None:
    """The inverse of :func:`read_face_csv` (AFLW's layout when the faces carry a box size)."""
    aflw = any(f.get("box_size") for f in faces)
    k = len(faces[0]["points"])
    head = ["image_name", "scale"] + (["box_size"] if aflw else []) + ["center_w", "center_h"]
    head += [f"original_{i}_{a}" for i in range(k) for a in "xy"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for face in faces:
            w.writerow([face["image"], face["scale"], *([face["box_size"]] if aflw else []), *face["center"],
                        *np.asarray(face["points"]).reshape(-1)])


def flip_pairs(num_points: int) -> Tuple[Tuple[int, int], ...]:
    return tuple(_face_pairs()) if num_points == 68 else ()


def normaliser(face: Dict, num_points: int) -> float:
    """NME's normalising distance of one face, as the official ``compute_nme``: inter-ocular
    (300W: outer eye corners 36-45; WFLW: 60-72; COFW: 8-9) or AFLW's box size."""
    pair = LAYOUTS.get(num_points, (None, None))[1]
    if pair is None:
        return float(face["box_size"]) if face["box_size"] else float(face["scale"]) * 200.0
    return float(np.linalg.norm(face["points"][pair[0]] - face["points"][pair[1]]))


class FaceLandmarks(SeededDataset):
    """Face crops of a CSV list (or COFW's .mat): ``image`` (3, S, S), ``joints`` (K, 2) in crop
    pixels, ``joints_vis`` (K,), and for evaluation ``center``, ``scale`` (2,) of the crop in
    200 px units, ``points`` (K, 2) in image pixels and ``norm``. ``pipeline`` is one of
    :data:`PIPELINES` (module docstring)."""

    def __init__(self, csv_file, image_root, num_points: int, input_size: int = 256, train: bool = False,
                 scale_factor: float = 0.25, rot_factor: float = 30.0, flip: bool = True, seed: int = 0,
                 pipeline: str = "official"):
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        self.faces = read_face_list(csv_file, num_points)
        self.root, self.k, self.size, self.train = Path(image_root), num_points, int(input_size), train
        self.scale_factor, self.rot_factor, self.seed, self.items = scale_factor, rot_factor, seed, self.faces
        self.pairs, self.pipeline = (flip_pairs(num_points) if flip else ()), pipeline
        missing = [f["image"] for f in self.faces[:50] if "pixels" not in f and not (self.root / f["image"]).is_file()]
        if missing:
            raise FileNotFoundError(f"face image not found: {self.root / missing[0]} (image_name is relative to "
                                    f"the image root)")

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        face = self.faces[i]
        img = face["pixels"] if "pixels" in face else read_image_rgb(self.root / face["image"])
        center, scale, rot, pts = face["center"].copy(), face["scale"] * CROP, 0.0, face["points"].copy()
        if self.train:
            rng = self.rng(i)
            scale *= rng.uniform(1 - self.scale_factor, 1 + self.scale_factor)
            rot = rng.uniform(-self.rot_factor, self.rot_factor) if rng.random() <= 0.6 else 0.0
            if self.pairs and rng.random() < 0.5:
                img, pts, center = _flip(img, pts, center, self.pairs, last=int(self.pipeline == "affine"))
        crop, joints = (self._official if self.pipeline == "official" else self._affine)(img, pts, center, scale, rot)
        vis = ((joints >= 0) & (joints < self.size)).all(1).astype(np.float32)
        return {"image": to_tensor(crop), "joints": torch.from_numpy(joints), "joints_vis": torch.from_numpy(vis),
                "center": torch.tensor(face["center"], dtype=torch.float32),
                "scale": torch.tensor([face["scale"] * CROP] * 2, dtype=torch.float32),
                "points": torch.from_numpy(face["points"].astype(np.float32)),
                "norm": torch.tensor(normaliser(face, self.k), dtype=torch.float32)}

    def _affine(self, img, pts, center, scale, rot):
        m = get_affine_transform(center, (scale, scale), rot, (self.size, self.size))
        crop = cv2.warpAffine(img, m, (self.size, self.size), flags=cv2.INTER_LINEAR)
        return crop, affine_points(pts, m).astype(np.float32)

    def _official(self, img, pts, center, scale, rot):
        """The repository's crop; its targets' whole heatmap pixels (a quarter of the crop), in
        crop pixels, where the loss places each Gaussian on exactly that heatmap pixel."""
        crop = official.official_face_crop(img, center, scale, (self.size, self.size), rot)
        stride = 4
        heat = official.official_face_targets(pts, center, scale, self.size // stride, rot)
        return crop, np.where(heat >= 0, heat * stride, -1.0).astype(np.float32)


def _flip(img, pts, center, pairs, last: int = 1):
    """Mirror left-right: x -> W - last - x (the pose code's W - 1 - x, or the face repository's
    W - x with ``last=0``), the mirror pairs swapped."""
    w = img.shape[1]
    pts = pts.copy()
    pts[:, 0] = w - last - pts[:, 0]
    for a, b in pairs:
        pts[[a, b]] = pts[[b, a]]
    return img[:, ::-1].copy(), pts, np.array([w - last - center[0], center[1]])


def _render_face(rng: np.random.Generator, size: int):
    """One face on a cluttered background: (image, 68 points, centre, scale in 200 px)."""
    from .synthetic import _background
    from .synthetic_wholebody import _face_template
    img = _background(rng, size, size)
    r = rng.uniform(0.22, 0.34) * size
    c = rng.uniform(0.4, 0.6, 2) * size
    angle = np.radians(rng.normal(0, 10))
    right, down = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    tpl = _face_template(rng.uniform(-0.2, 0.2))
    pts = c + (tpl[:, :1] * right + tpl[:, 1:] * down) * r
    skin = tuple(float(v) for v in rng.uniform([120, 80, 60], [240, 200, 170]))
    cv2.ellipse(img, (int(c[0]), int(c[1] + 0.1 * r)), (int(0.9 * r), int(1.05 * r)), float(np.degrees(angle)),
                0, 360, skin, -1, cv2.LINE_AA)
    for chain, colour, closed in ((range(0, 17), (90, 60, 50), False), (range(17, 27), (40, 30, 30), False),
                                  (range(27, 36), (110, 70, 60), False), (range(36, 48), (20, 20, 20), True),
                                  (range(48, 68), (170, 40, 50), True)):
        for seg in ([list(chain)] if chain.start not in (17, 36, 48) else
                    [list(chain)[:len(chain) // 2], list(chain)[len(chain) // 2:]]):
            cv2.polylines(img, [np.round(pts[seg] * 4).astype(np.int32)], closed, colour, 1, cv2.LINE_AA, shift=2)
    return np.clip(img, 0, 255).astype(np.uint8), pts, c, 2.0 * r / 200.0


def make_synthetic_faces(root, num_train: int = 120, num_val: int = 30, size: int = 128, seed: int = 0,
                         progress: bool = True) -> Dict[str, Path]:
    """Write (or reuse) a 300W-format dataset: ``images/``, ``face_landmarks_300w_train.csv``,
    ``face_landmarks_300w_valid.csv`` and its ``_common`` / ``_challenge`` subsets (by pose).
    Returns ``root``, ``images``, ``train`` and ``valid``."""
    from .synthetic import _write_atomic
    root = Path(root)
    paths = {"root": root, "images": root / "images", "train": root / "face_landmarks_300w_train.csv",
             "valid": root / "face_landmarks_300w_valid.csv"}
    meta = {"train": num_train, "val": num_val, "size": size, "seed": seed}
    stamp = root / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return paths
    paths["images"].mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", num_train, 0), ("valid", num_val, 1_000_000)):
        faces = []
        for i in tqdm(range(count), desc=f"synthetic faces {split}", disable=not progress, leave=False):
            img, pts, c, scale = _render_face(np.random.default_rng([seed, offset + i]), size)
            name = f"{split}_{i:05d}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise RuntimeError("OpenCV could not encode a synthetic face")
            _write_atomic(paths["images"] / name, buf.tobytes())
            faces.append({"image": name, "scale": round(scale, 4), "center": np.round(c, 2),
                          "points": np.round(pts, 2), "box_size": 0.0})
        write_face_csv(paths[split], faces)
        if split == "valid":      # two subsets, as 300W's common and challenging sets
            write_face_csv(root / "face_landmarks_300w_valid_common.csv", faces[: count // 2])
            write_face_csv(root / "face_landmarks_300w_valid_challenge.csv", faces[count // 2:])
    _write_atomic(stamp, json.dumps(meta).encode())
    return paths
