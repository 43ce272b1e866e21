"""The sample data inside the package: four real COCO val2017 images (``coco-mini``) with their
person annotations and detector boxes, found through ``importlib.resources`` so that an
installed wheel has them in any working folder."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import List, Tuple

import numpy as np


def coco_mini() -> Path:
    """The coco-mini folder: ``images/*.jpg``, ``annotations/person_keypoints.json`` (ground
    truth) and ``annotations/person_detections.json`` (detector boxes)."""
    root = Path(str(resources.files("hrfast.sample_data").joinpath("coco-mini")))
    if not (root / "annotations" / "person_keypoints.json").is_file():
        raise FileNotFoundError(f"hrfast's sample data is missing from {root}: reinstall hrfast")
    return root


def sample_images() -> List[Path]:
    """The four coco-mini images, sorted by name."""
    return sorted((coco_mini() / "images").glob("*.jpg"))


def sample_boxes(image: Path, source: str = "annotations", min_score: float = 0.5) -> np.ndarray:
    """(N, 4) person boxes x, y, w, h in the pixels of ``image`` (a coco-mini image): the
    ground-truth boxes of people with keypoints (``source="annotations"``), or the detector's
    boxes scoring above ``min_score`` (``source="detections"``)."""
    image_id = int(Path(image).stem)
    ann = coco_mini() / "annotations"
    if source == "annotations":
        data = json.loads((ann / "person_keypoints.json").read_text())["annotations"]
        boxes = [a["bbox"] for a in data if a["image_id"] == image_id and a["num_keypoints"] > 0]
    elif source == "detections":
        data = json.loads((ann / "person_detections.json").read_text())
        boxes = [d["bbox"] for d in data if d["image_id"] == image_id and d["score"] > min_score]
    else:
        raise ValueError(f"source must be 'annotations' or 'detections', got {source!r}")
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def largest_person() -> Tuple[Path, list]:
    """(image path, (x, y, w, h) box) of the largest annotated person of coco-mini."""
    root = coco_mini()
    data = json.loads((root / "annotations" / "person_keypoints.json").read_text())
    ann = max(data["annotations"], key=lambda a: a["area"])
    img = next(i for i in data["images"] if i["id"] == ann["image_id"])
    return root / "images" / img["file_name"], ann["bbox"]
