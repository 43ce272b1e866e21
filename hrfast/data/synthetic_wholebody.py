"""Feet, faces and hands for the synthetic figures (:mod:`hrfast.data.synthetic`), so that a
COCO-WholeBody dataset of 133 keypoints can be rendered offline.

:func:`draw_parts` places the 116 keypoints beyond the body's 17 on a figure, in the order of
:mod:`hrfast.data.wholebody` (6 foot, 68 face in the iBUG-68 layout, 21 per hand), draws
them, and returns them with the pixels it covered. :func:`wholebody_fields` turns a rendered
annotation of 133 keypoints into COCO-WholeBody's fields, with valid flags and part boxes.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .wholebody import PARTS


def _frame(j: np.ndarray):
    """(up, right) unit vectors of the figure: neck over the hips; right points to the
    figure's left side, which is the image's right for a front-facing figure."""
    neck, hips = (j[5] + j[6]) / 2, (j[11] + j[12]) / 2
    up = (neck - hips) / max(np.linalg.norm(neck - hips), 1e-6)
    return up, np.array([-up[1], up[0]])


def _face_template(yaw: float) -> np.ndarray:
    """(68, 2) iBUG-68 points in head radii: u to the image's right, v down, from the head's
    centre. Point 0 is the subject's right jaw, on the image's left."""
    pts = []
    for i in range(17):                                  # jaw
        t = math.pi * i / 16
        pts.append((-0.8 * math.cos(t) + 0.4 * yaw * math.sin(t), -0.05 + 0.75 * math.sin(t)))
    for c in (-1, 1):                                    # brows: the image's left one first
        for k in range(5):
            u = c * (0.12 + 0.5 * (k / 4 if c > 0 else 1 - k / 4))
            pts.append((u + yaw, -0.45 - 0.06 * math.sin(math.pi * k / 4)))
    pts += [(yaw * k / 3, -0.2 + 0.1 * k) for k in range(4)]                     # nose bridge
    pts += [(yaw - 0.18 + 0.09 * k, 0.2 + (0.02 if k == 2 else 0.0)) for k in range(5)]   # nostrils
    for c in (-0.38, 0.38):                              # eyes: corner, top two, corner, bottom two
        angles = (math.pi, 2 * math.pi / 3, math.pi / 3, 0.0, -math.pi / 3, -2 * math.pi / 3)
        pts += [(c + yaw + 0.14 * math.cos(a), -0.25 - 0.05 * math.sin(a)) for a in angles]
    for n, w, h in ((12, 0.3, 0.1), (8, 0.2, 0.05)):     # lips, outer then inner, from the left corner
        pts += [(yaw + w * math.cos(math.pi - 2 * math.pi * k / n), 0.42 - h * math.sin(math.pi - 2 * math.pi * k / n))
                for k in range(n)]
    return np.array(pts)


def _hand(rng: np.random.Generator, wrist: np.ndarray, elbow: np.ndarray, side: int, length: float) -> np.ndarray:
    """(21, 2): the wrist, then each finger's four joints from the palm out."""
    d = wrist - elbow
    d = d / max(np.linalg.norm(d), 1e-6)
    spread = rng.uniform(0.7, 1.0)

    def rot(v, a):
        return np.array([v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a)])

    pts = [wrist]
    for f in range(5):
        a = side * spread * (-0.9 + 0.4 * f) + rng.normal(0, 0.08)
        base = wrist + rot(d, a * 0.6) * (0.2 if f == 0 else 0.4) * length
        step = rot(d, a) * (0.16 if f == 0 else 0.14) * length
        pts += [base + step * i for i in range(4)]
    return np.array(pts)


def _feet(j: np.ndarray, up: np.ndarray, right: np.ndarray, height: float) -> np.ndarray:
    """(6, 2): big toe, small toe and heel of the left foot, then of the right."""
    down, out = -up, []
    for ankle, side in ((j[15], 1), (j[16], -1)):
        out += [ankle + down * 0.05 * height - right * side * 0.012 * height,
                ankle + down * 0.045 * height + right * side * 0.03 * height,
                ankle + down * 0.018 * height + right * side * 0.004 * height]
    return np.array(out)


def _colour_at(img: np.ndarray, p: np.ndarray) -> Tuple[float, ...]:
    h, w = img.shape[:2]
    x, y = int(np.clip(p[0], 0, w - 1)), int(np.clip(p[1], 0, h - 1))
    return tuple(float(c) for c in img[y, x])


def draw_parts(img: np.ndarray, rng: np.random.Generator, j: np.ndarray, height: float
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Place and draw the feet, the face and the hands of the figure with body joints ``j``
    (17, 2) in pixels; return their (116, 2) keypoints and the (H, W) bool mask drawn."""
    up, right = _frame(j)
    head, r = (j[3] + j[4]) / 2, 0.075 * height
    yaw = float(np.dot(j[0] - head, right)) / r          # where _figure put the nose
    tpl = _face_template(yaw)
    face = head + (tpl[:, :1] * right - tpl[:, 1:] * up) * r
    feet = _feet(j, up, right, height)
    hands = [_hand(rng, j[9], j[7], 1, 0.1 * height), _hand(rng, j[10], j[8], -1, 0.1 * height)]
    mask = np.zeros(img.shape[:2], np.uint8)
    pt = lambda p: (int(round(p[0] * 4)), int(round(p[1] * 4)))      # noqa: E731 (shift=2 sub-pixel)
    width = max(1, int(0.012 * height))
    for ankle, toes in ((j[15], feet[:3]), (j[16], feet[3:])):       # a shoe over ankle, toes and heel
        poly = np.round(np.array([ankle, toes[1], toes[0]]) * 4).astype(np.int32)
        shoe = _colour_at(img, ankle)
        cv2.fillPoly(img, [poly], shoe, cv2.LINE_AA, shift=2)
        cv2.polylines(img, [poly], True, shoe, width * 2, cv2.LINE_AA, shift=2)
        cv2.fillPoly(mask, [poly], 1, cv2.LINE_8, shift=2)
    for hand in hands:
        skin = _colour_at(img, hand[0])
        for f in range(5):
            chain = np.vstack([hand[:1], hand[1 + 4 * f:5 + 4 * f]])
            for a, b in zip(chain[:-1], chain[1:]):
                cv2.line(img, pt(a), pt(b), skin, width, cv2.LINE_AA, shift=2)
                cv2.line(mask, pt(a), pt(b), 1, width, cv2.LINE_8, shift=2)
    dark, lips = (30.0, 25.0, 25.0), (170.0, 40.0, 50.0)
    for chain, colour, closed in ((range(0, 17), dark, False), (range(17, 22), dark, False),
                                  (range(22, 27), dark, False), (range(27, 36), dark, False),
                                  (range(36, 42), dark, True), (range(42, 48), dark, True),
                                  (range(48, 60), lips, True), (range(60, 68), lips, True)):
        poly = np.round(face[list(chain)] * 4).astype(np.int32)
        cv2.polylines(img, [poly], closed, colour, 1, cv2.LINE_AA, shift=2)
    return np.vstack([feet, face, *hands]), mask.astype(bool)


def wholebody_fields(ann: Dict, min_extent: float = 6.0) -> Dict:
    """A rendered annotation with 133 flat keypoints as COCO-WholeBody's fields. A part is
    valid when some of its keypoints are labelled and they span at least ``min_extent``
    pixels (annotators skip parts too small to mark); an invalid part is all zeros."""
    kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    out = {k: v for k, v in ann.items() if k != "keypoints"}
    for name, (field, valid, start, count) in PARTS.items():
        part = kps[start:start + count].copy()
        labelled = part[part[:, 2] > 0]
        extent = float(np.ptp(labelled[:, :2], axis=0).max()) if len(labelled) else 0.0
        ok = name == "body" or (len(labelled) > 0 and extent >= min_extent)
        if not ok:
            part[:] = 0
        out[field] = [round(float(v), 2) for v in part.reshape(-1)]
        if valid:
            out[valid] = bool(ok)
        if name in ("face", "left hand", "right hand"):
            out[field.replace("_kpts", "_box")] = _box(labelled) if ok else [0.0, 0.0, 0.0, 0.0]
    out["num_keypoints"] = int((kps[:17, 2] > 0).sum())
    return out


def _box(points: np.ndarray) -> List[float]:
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    pad = 0.1 * (hi - lo)
    return [round(float(v), 2) for v in (*(lo - pad), *(hi - lo + 2 * pad))]
