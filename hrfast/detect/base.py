"""What every detector returns, and the box NMS they share."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Detector(Protocol):
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (N, 5) float64 ``[x, y, w, h, score]`` in image pixels,
        highest score first."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) ``[x, y, w, h]`` boxes: (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def nms_xywh(boxes: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy NMS of (N, 5) ``[x, y, w, h, score]`` boxes: the kept ones, highest score first."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        iou = box_iou(boxes[i:i + 1, :4], boxes[order[1:], :4])[0]
        order = order[1:][iou <= iou_threshold]
    return boxes[keep]
