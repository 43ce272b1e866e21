"""Person boxes given by users: checked arrays, and box files (a map or COCO detections)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .coco import read_json
from .transforms import box_overlaps_image


def check_boxes(boxes, where: str = "boxes") -> np.ndarray:
    """Person boxes as an (N, 4) float64 array [x, y, w, h] in image pixels; N may be 0.
    Raise a ValueError naming ``where`` unless every box is finite with positive size."""
    arr = np.asarray(boxes if len(boxes) else np.zeros((0, 4)), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ValueError(f"{where} must be (N, 4) [x, y, w, h], got shape {arr.shape}")
    arr = arr[:, :4]
    bad = ~np.isfinite(arr).all(1) | (arr[:, 2] <= 0) | (arr[:, 3] <= 0)
    if bad.any():
        raise ValueError(f"{where}: box {int(np.argmax(bad))} must be finite with positive width and height, "
                         f"got {arr[bad][0].tolist()}")
    return arr


def boxes_inside(boxes: np.ndarray, width: int, height: int):
    """(the boxes with any part inside a ``width`` x ``height`` image, how many were dropped):
    a box wholly outside holds no pixel of a person, so its pose would be made up."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = box_overlaps_image(b[:, 0], b[:, 1], b[:, 2], b[:, 3], width, height)
    return b[keep], int((~keep).sum())


def boxes_for_images(images, boxes_file, min_score: float = 0.0):
    """Per image, its (N, 4) boxes from ``boxes_file``, or None (the whole image is one person).

    The file is either {file name: [[x, y, w, h], ...]} or a COCO detection-results list
    ({image_id, bbox, score}); for the list, image ids are the numeric stem of the file name
    (COCO naming, e.g. 000000000785.jpg -> 785). An image that the file lists with no box, or
    with no detection above ``min_score``, has zero people; one that a dict file does not list
    is whole. Every box is checked (finite, positive size) before any work."""
    if boxes_file is None:
        return [None] * len(images)
    data = read_json(boxes_file, "--boxes file")
    if not isinstance(data, (dict, list)):
        raise ValueError(f"--boxes file {boxes_file} must hold a dict or a list of detections, "
                         f"got {type(data).__name__}")
    out = []
    for im in images:
        name = Path(im).name
        where = f"--boxes file {boxes_file}, {name}"
        if isinstance(data, dict):
            b = data.get(name, data.get(str(im)))
            out.append(None if b is None else check_boxes(b if isinstance(b, list) else [b], where))
            continue
        try:
            iid = int(Path(im).stem)
        except ValueError:
            raise ValueError(f"--boxes holds COCO detections, but {name} has no numeric image id") from None
        if not all(isinstance(d, dict) and "bbox" in d for d in data):
            raise ValueError(f"--boxes file {boxes_file}: every detection needs a 'bbox'")
        out.append(check_boxes([d["bbox"] for d in data if d.get("image_id") == iid
                                and d.get("score", 1.0) >= min_score and d.get("category_id", 1) == 1], where))
    return out
