"""OpenCV's HOG people detector (Dalal and Triggs, CVPR 2005): embedded in OpenCV, so it needs
no download. It finds upright, roughly full-body people at least 64 x 128 pixels and misses
the rest (sitting, cropped, small or crowded people): an ONNX detector does far better."""
from __future__ import annotations

import cv2
import numpy as np

from .base import nms_xywh


class HOGDetector:
    """``HOGDetector()(image)`` -> (N, 5) ``[x, y, w, h, score]``; the score is the SVM margin
    squashed to (0, 1)."""

    def __init__(self, score_threshold: float = 0.3, max_side: int = 640, iou_threshold: float = 0.45):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold, self.max_side, self.iou_threshold = score_threshold, max_side, iou_threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if h < 128 or w < 64:
            # smaller than HOG's 64 x 128 window: nobody fits (and OpenCV 4.14's detectMultiScale
            # crashes the process on such an image instead of returning nothing)
            return np.zeros((0, 5))
        # HOG's cost grows with the pixels; large frames are searched at a bounded size
        f = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA) if f < 1 else image
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        rects, weights = self.hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 5))
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float64).reshape(-1)))
        boxes = np.concatenate([np.asarray(rects, np.float64) / f, scores[:, None]], axis=1)
        return nms_xywh(boxes[scores >= self.score_threshold], self.iou_threshold)
