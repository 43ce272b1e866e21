"""``hrfast.detect``: person detectors behind one call, ``detector(image) -> (N, 5)`` boxes
``[x, y, w, h, score]`` in image pixels, highest score first.

- :class:`ONNXDetector` (``onnx_detector.py``): an exported YOLOX, RTMDet (mmdeploy) or
  YOLOv8 (ultralytics) model run by onnxruntime; decoding, score threshold and NMS here.
- :class:`HOGDetector` (``hog.py``): OpenCV's HOG people detector, embedded, no download, weak.
- :func:`build_detector` picks one from the command line's ``--detector`` / ``--detector-format``.
"""
from __future__ import annotations

from typing import Optional

from .base import Detector, nms_xywh
from .hog import HOGDetector
from .onnx_detector import LAYOUTS, ONNXDetector, decode_outputs, letterbox

__all__ = ["Detector", "HOGDetector", "ONNXDetector", "LAYOUTS", "build_detector", "decode_outputs", "letterbox",
           "nms_xywh", "no_person_hint"]


def build_detector(spec: Optional[str] = "hog", layout: str = "auto", score_threshold: float = 0.3) -> Detector:
    """``"hog"`` (the embedded default) or the path of an ``.onnx`` person detector in one of
    :data:`LAYOUTS` (``"auto"``: told by its output shapes)."""
    if spec in (None, "", "hog"):
        return HOGDetector(score_threshold=score_threshold)
    return ONNXDetector(spec, layout=layout, score_threshold=score_threshold)


def no_person_hint(spec: Optional[str], empty: int, total: int, unit: str) -> str:
    """One line for a run in which the detector found no person in ``empty`` of ``total``
    images or frames, with what to do about it."""
    weak = spec in (None, "", "hog")
    better = ("OpenCV's HOG detector finds only upright, whole, large people: use an ONNX detector (--detector "
              "yolox_s.onnx; README, Footage)" if weak else "lower --det-thre, or use another detector")
    return f"note: the detector found no person in {empty} of {total} {unit}: {better}, or give --boxes"
