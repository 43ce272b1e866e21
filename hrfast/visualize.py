"""Drawing keypoints: skeletons on images, and grids of them saved as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .data.keypoints import COCO17, KeypointSet
from .data.wholebody import NUM_WHOLEBODY, WHOLEBODY_NAMES, part_of
from .outputs import write_png

# left limbs warm, right limbs cool, centre green (RGB tuples)
_COLORS = {"left": (255, 128, 0), "right": (0, 160, 255), "mid": (60, 220, 60)}
# whole body: the face in thin white lines, each finger in its own colour (thumb to little finger)
_FACE = (245, 245, 245)
_FINGERS = ((255, 60, 60), (255, 200, 0), (60, 220, 60), (0, 200, 255), (200, 80, 255))


def draw_skeleton(image: np.ndarray, keypoints, threshold: float = 0.2, radius: int = 3,
                  thickness: int = 2, keypoint_set: KeypointSet = COCO17) -> np.ndarray:
    """Draw people on a copy of ``image`` (H, W, 3) uint8 RGB.

    keypoints: (N, K, 3) or (K, 3) x, y in image pixels and a score (or COCO visibility);
    joints whose score is not above ``threshold`` are not drawn; when that is every joint of
    every person, the image says so ("no keypoint above <threshold>") rather than look like
    a photo with nobody in it. The limbs and the joints' sides (colours) come from ``keypoint_set``."""
    out = np.ascontiguousarray(image.copy())
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    scale = max(1, round(max(out.shape[:2]) / 400))
    whole = keypoint_set.names == WHOLEBODY_NAMES and kp.shape[1] == NUM_WHOLEBODY
    for person in kp:
        ok = person[:, 2] > threshold
        if whole:
            _draw_wholebody(out, person, ok, keypoint_set, scale * radius, scale * thickness)
            continue
        side = [keypoint_set.side(k) if k < keypoint_set.num_joints else "mid" for k in range(len(person))]
        for a, b in keypoint_set.skeleton:
            if a < len(person) and b < len(person) and ok[a] and ok[b]:
                color = _COLORS[side[a] if side[a] == side[b] else "mid"]
                cv2.line(out, tuple(int(v) for v in person[a, :2]), tuple(int(v) for v in person[b, :2]),
                         color, thickness * scale, cv2.LINE_AA)
        for k, (x, y, _) in enumerate(person):
            if ok[k]:
                color = _COLORS[side[k]]
                cv2.circle(out, (int(x), int(y)), radius * scale, color, -1, cv2.LINE_AA)
                cv2.circle(out, (int(x), int(y)), radius * scale, (255, 255, 255), 1, cv2.LINE_AA)
    if len(kp) and not (kp[:, :, 2] > threshold).any():
        _caption(out, f"{len(kp)} {'person' if len(kp) == 1 else 'people'}, no keypoint above {threshold:g}", scale)
    return out


def _part_style(joint: int, side: str, radius: int, thickness: int):
    """(colour, radius, line thickness) of one of the 133: the body and feet as a body
    skeleton, the face thin and white, the hands thin, one colour per finger."""
    part = part_of(joint)
    if part == "face":
        return _FACE, max(1, radius // 3), 1
    if part.endswith("hand"):
        local = joint - (91 if part == "left hand" else 112)
        colour = _COLORS[side] if local == 0 else _FINGERS[(local - 1) // 4]
        return colour, max(1, radius // 2), max(1, thickness // 2)
    return _COLORS[side], radius, thickness


def _draw_wholebody(out: np.ndarray, person: np.ndarray, ok: np.ndarray, keypoint_set: KeypointSet,
                    radius: int, thickness: int) -> None:
    """One person of the 133 on ``out`` in place, each part in its own style; a limb takes
    the style of its outer joint (the wrist-to-hand line is the hand's)."""
    sides = [keypoint_set.side(k) for k in range(len(person))]
    styles = [_part_style(k, sides[k], radius, thickness) for k in range(len(person))]
    for a, b in keypoint_set.skeleton:
        if ok[a] and ok[b]:
            colour, _, width = styles[b]
            if b < 17:
                colour = _COLORS[sides[a] if sides[a] == sides[b] else "mid"]
            cv2.line(out, tuple(int(v) for v in person[a, :2]), tuple(int(v) for v in person[b, :2]),
                     colour, width, cv2.LINE_AA)
    for k, (x, y, _) in enumerate(person):
        if ok[k]:
            colour, r, _ = styles[k]
            cv2.circle(out, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
            if r >= 3:
                cv2.circle(out, (int(x), int(y)), r, (255, 255, 255), 1, cv2.LINE_AA)


def _caption(image: np.ndarray, text: str, scale: int) -> None:
    """White text on a dark band at the top left of ``image``, in place."""
    size, base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, scale)
    cv2.rectangle(image, (0, 0), (size[0] + 8 * scale, size[1] + base + 8 * scale), (0, 0, 0), -1)
    cv2.putText(image, text, (4 * scale, size[1] + 4 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                (255, 255, 255), scale, cv2.LINE_AA)


def save_grid(images: Sequence[np.ndarray], path, columns: int = 4, cell: int = 256) -> Path:
    """Tile RGB images (resized to ``cell`` px high) into one PNG at ``path``."""
    if not images:
        raise ValueError("save_grid: no images to draw")
    tiles = []
    for im in images:
        h, w = im.shape[:2]
        tiles.append(cv2.resize(im, (max(1, round(w * cell / h)), cell), interpolation=cv2.INTER_AREA))
    width = max(t.shape[1] for t in tiles)
    rows = []
    for r in range(0, len(tiles), columns):
        row = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles[r:r + columns]]
        row += [np.zeros_like(row[0])] * (columns - len(row))
        rows.append(np.concatenate(row, 1))
    grid = np.concatenate(rows, 0)
    return write_png(path, grid)
