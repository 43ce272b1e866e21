"""Checks of a COCO keypoint annotation file, made in full before any training or evaluation.

pycocotools indexes what it needs without a message, and COCOeval meets a bad annotation only
after the whole inference pass (an ``IndexError`` for a keypoint list of the wrong length, a
bare ``KeyError: 'area'``). So every annotation of the keypoint category is checked when the
file is opened, and the first problem is one ``ValueError`` that names the file, the
annotation id and the field.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable

# what each annotation of the keypoint category must hold, and what it is for
REQUIRED = {"id": "its identity", "image_id": "its image", "keypoints": "the joints",
            "bbox": "the person box", "area": "COCOeval's area ranges"}


class AnnotationError(ValueError):
    """An annotation file that training or COCOeval cannot use; the message names the file,
    the annotation and the field."""


def _numbers(value) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def check_categories(dataset: Dict, path: Path) -> None:
    cats = dataset.get("categories")
    if not isinstance(cats, list) or not cats:
        raise AnnotationError(f"{path}: 'categories' is {'empty' if isinstance(cats, list) else 'missing'} "
                              f"(a COCO keypoint file names its person category, with its keypoints and skeleton)")


def check_annotation(ann: Dict, num_joints: int, path: Path) -> None:
    """One annotation of the keypoint category (the module doc)."""
    where = f"{path}: annotation {ann.get('id', '(no id)')}"
    missing = [k for k in REQUIRED if k not in ann]
    if missing:
        raise AnnotationError(f"{where} has no '{missing[0]}' ({REQUIRED[missing[0]]})")
    kps, box, area = ann["keypoints"], ann["bbox"], ann["area"]
    if not _numbers(kps) or len(kps) != 3 * num_joints:
        got = f"{len(kps)} numbers" if isinstance(kps, (list, tuple)) else type(kps).__name__
        raise AnnotationError(f"{where}: 'keypoints' must hold 3 x {num_joints} = {3 * num_joints} numbers "
                              f"(x, y, visibility per joint), got {got}")
    if not _finite(kps):
        raise AnnotationError(f"{where}: 'keypoints' holds a non-finite value (NaN or inf)")
    if not _numbers(box) or len(box) != 4:
        raise AnnotationError(f"{where}: 'bbox' must be [x, y, w, h], got {str(box)[:60]}")
    if not _finite(box):
        raise AnnotationError(f"{where}: 'bbox' holds a non-finite value (NaN or inf)")
    if not _numbers([area]) or not math.isfinite(float(area)) or area < 0:
        raise AnnotationError(f"{where}: 'area' must be a finite number >= 0, got {area!r}")


def check_keypoint_file(dataset: Dict, path, category_id: int, num_joints: int) -> None:
    """Every check of the module doc on a loaded COCO keypoint json (``dataset``)."""
    path = Path(path)
    check_categories(dataset, path)
    images = dataset.get("images")
    if not isinstance(images, list) or not images:
        raise AnnotationError(f"{path}: 'images' is missing or empty")
    for im in images:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise AnnotationError(f"{path}: every image needs 'id' and 'file_name', got {str(im)[:80]}")
    anns = dataset.get("annotations")
    if not isinstance(anns, list):
        raise AnnotationError(f"{path}: 'annotations' is missing")
    for ann in anns:
        if not isinstance(ann, dict):
            raise AnnotationError(f"{path}: an annotation is {type(ann).__name__}, expected an object")
        if ann.get("category_id", category_id) == category_id:
            check_annotation(ann, num_joints, path)


def check_images_exist(image_dir: Path, file_names: Iterable[str], what: str = "image") -> None:
    """Every image a dataset will read is there, checked before the first epoch or pass."""
    missing = [n for n in file_names if not (Path(image_dir) / n).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{what} file not found: {Path(image_dir) / missing[0]}{more}")
