"""Drawing keypoints: skeletons on images, and grids of them saved as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .data.keypoints import COCO17, KeypointSet
from .outputs import write_png

# left limbs warm, right limbs cool, centre green (RGB tuples)
_COLORS = {"left": (255, 128, 0), "right": (0, 160, 255), "mid": (60, 220, 60)}


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
    for person in kp:
        ok = person[:, 2] > threshold
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
