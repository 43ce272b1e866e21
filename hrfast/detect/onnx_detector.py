"""Person detection with an exported ONNX detector, run by onnxruntime.

Three output layouts of common exports are understood (COCO classes, person = class 0):

- ``yolox``: the official YOLOX export, one output (1, N, 5 + C): per anchor of the stride
  8/16/32 grids, raw ``cx, cy`` (grid offsets), ``w, h`` (log of stride multiples), then the
  objectness and the class scores (already sigmoid). Input: BGR 0-255, letterboxed top-left.
- ``yolov8``: the ultralytics export, one output (1, 4 + C, N): ``cx, cy, w, h`` in input
  pixels, then the class scores. Input: RGB / 255, letterboxed centred.
- ``rtmdet``: mmdeploy's end-to-end export of RTMDet, outputs ``dets`` (1, N, 5) (``x1, y1,
  x2, y2, score`` in input pixels) and ``labels`` (1, N). Input: BGR normalized with mmdet's
  mean and std, letterboxed top-left.

Letterboxing pads with 114, as all three trained with. The score threshold and the NMS are
hrfast's (:func:`~hrfast.detect.base.nms_xywh`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from ..extras import require
from .base import nms_xywh


@dataclass(frozen=True)
class _Input:
    centred: bool
    rgb: bool
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


LAYOUTS = {
    "yolox": _Input(False, False, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "yolov8": _Input(True, True, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    "rtmdet": _Input(False, False, (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)),
}
PERSON = 0


def letterbox(image: np.ndarray, size: Tuple[int, int], centred: bool) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """``image`` (H, W, 3) resized to fit ``size`` = (width, height) keeping its aspect ratio
    and padded with 114. Returns the padded image, the scale and the (x, y) offset of the
    image in it: input pixel = image pixel * scale + offset."""
    h, w = image.shape[:2]
    r = min(size[0] / w, size[1] / h)
    nw, nh = round(w * r), round(h * r)
    out = np.full((size[1], size[0], 3), 114, np.uint8)
    ox, oy = ((size[0] - nw) // 2, (size[1] - nh) // 2) if centred else (0, 0)
    out[oy:oy + nh, ox:ox + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, r, (float(ox), float(oy))


def _yolox_grid(n: int, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The (n, 2) grid cells and (n,) strides of YOLOX's stride 8/16/32 heads for ``size``."""
    cells, strides = [], []
    for s in (8, 16, 32):
        gw, gh = size[0] // s, size[1] // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full(gw * gh, s))
    cells, strides = np.concatenate(cells), np.concatenate(strides)
    if len(cells) != n:
        raise ValueError(f"a yolox output of {n} anchors does not fit the stride 8/16/32 grids of a "
                         f"{size[0]}x{size[1]} input ({len(cells)} anchors)")
    return cells.astype(np.float64), strides.astype(np.float64)


def decode_outputs(layout: str, outputs: Sequence[np.ndarray], size: Tuple[int, int]) -> np.ndarray:
    """The person boxes of one image's raw outputs: (N, 5) ``[x1, y1, x2, y2, score]`` in
    input pixels of a ``size`` = (width, height) input."""
    if layout == "rtmdet":
        dets, labels = np.asarray(outputs[0], np.float64)[0], np.asarray(outputs[1])[0]
        return dets[labels.reshape(-1) == PERSON, :5]
    out = np.asarray(outputs[0], np.float64)[0]
    if layout == "yolov8":
        rows = out.T                                            # (N, 4 + C)
        cx, cy, w, h, score = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4 + PERSON]
    elif layout == "yolox":
        cells, strides = _yolox_grid(len(out), size)
        cx, cy = (out[:, 0] + cells[:, 0]) * strides, (out[:, 1] + cells[:, 1]) * strides
        w, h = np.exp(out[:, 2]) * strides, np.exp(out[:, 3]) * strides
        score = out[:, 4] * out[:, 5 + PERSON]
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score], 1)


def guess_layout(shapes: List[Tuple]) -> str:
    """The layout that output ``shapes`` fit, or a ValueError that names the shapes."""
    known = ("known layouts: yolox (1, N, 5+C), yolov8 (1, 4+C, N), rtmdet dets (1, N, 5) + labels (1, N)")
    if len(shapes) == 2 and len(shapes[0]) == 3 and shapes[0][2] == 5 and len(shapes[1]) == 2:
        return "rtmdet"
    if len(shapes) == 1 and len(shapes[0]) == 3:
        a, b = shapes[0][1], shapes[0][2]
        if isinstance(a, int) and isinstance(b, int) and a != b:
            if 5 <= a < b:
                return "yolov8"
            if 6 <= b < a:
                return "yolox"
    raise ValueError(f"the detector's outputs {shapes} match no known layout ({known}); "
                     f"name it with --detector-format")


def check_layout(layout: str, shapes: List[Tuple]) -> str:
    """``layout`` when output ``shapes`` can be read in it (the one the user named), else a
    ValueError that says what it expects."""
    fits = {"rtmdet": len(shapes) == 2 and len(shapes[0]) == 3 and shapes[0][2] == 5 and len(shapes[1]) == 2,
            "yolov8": len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][1] >= 5,
            "yolox": len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][2] >= 6}
    if not fits[layout]:
        expects = {"rtmdet": "dets (1, N, 5) and labels (1, N)", "yolov8": "one (1, 4+C, N) output",
                   "yolox": "one (1, N, 5+C) output"}[layout]
        raise ValueError(f"--detector-format {layout} expects {expects}, but the detector's outputs are {shapes}")
    return layout


class ONNXDetector:
    """``ONNXDetector("yolox_s.onnx")(image)`` -> (N, 5) ``[x, y, w, h, score]`` people.

    Args:
        path: the ``.onnx`` file.
        layout: one of :data:`LAYOUTS`, or ``"auto"``: told from the output shapes (a first
            run on a blank image), an error naming them when they fit none.
        score_threshold: people below it are dropped; iou_threshold: NMS.
    """

    def __init__(self, path, layout: str = "auto", score_threshold: float = 0.3, iou_threshold: float = 0.5,
                 threads: int = 0):
        ort = require("onnxruntime", "an ONNX person detector")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--detector file not found: {path}")
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"--detector-format must be auto or one of {', '.join(LAYOUTS)}, got {layout!r}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:    # onnxruntime raises its own types for a bad file
            raise ValueError(f"--detector {path} is not an ONNX model onnxruntime can load: {exc}") from None
        shape = self.session.get_inputs()[0].shape
        self.size = (shape[3], shape[2]) if all(isinstance(v, int) for v in shape[2:4]) else (640, 640)
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        shapes = [tuple(o.shape) for o in self._run(np.zeros((self.size[1], self.size[0], 3), np.float32))]
        self.layout = guess_layout(shapes) if layout == "auto" else check_layout(layout, shapes)

    def _run(self, x: np.ndarray) -> List[np.ndarray]:
        feed = np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)
        return self.session.run(None, {self.session.get_inputs()[0].name: feed})

    def __call__(self, image: np.ndarray) -> np.ndarray:
        spec = LAYOUTS[self.layout]
        padded, r, (ox, oy) = letterbox(image, self.size, spec.centred)
        x = padded if spec.rgb else padded[..., ::-1]
        x = (x.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
        boxes = decode_outputs(self.layout, self._run(x), self.size)
        boxes = boxes[boxes[:, 4] >= self.score_threshold]
        x1, y1 = (boxes[:, 0] - ox) / r, (boxes[:, 1] - oy) / r
        x2, y2 = (boxes[:, 2] - ox) / r, (boxes[:, 3] - oy) / r
        xywh = np.stack([x1, y1, x2 - x1, y2 - y1, boxes[:, 4]], 1)
        return nms_xywh(xywh[(xywh[:, 2] > 0) & (xywh[:, 3] > 0)], self.iou_threshold)
