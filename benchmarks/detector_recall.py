"""Person-detector recall on the four real coco-mini photos (COCO val2017): how many of the
annotated people a detector finds, at IoU >= 0.5 with their ground-truth box.

    python benchmarks/detector_recall.py                       # hrfast's embedded default (HOG)
    python benchmarks/detector_recall.py --detector det.onnx   # an ONNX export (hrfast.detect)
    python benchmarks/detector_recall.py --mediapipe           # mediapipe 0.10.21's BlazePose
                                                               # (needs its own environment)

Only numpy, OpenCV and the json files are needed for the counting, so the ``--mediapipe`` run
works in an environment that has mediapipe but not hrfast (mediapipe 0.10.21, the last that
ships its person detector in the wheel, needs numpy < 2 and protobuf < 5).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "data" / "coco-mini"


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def matches(gt, dets, threshold: float = 0.5) -> int:
    """Greedy one-to-one matching, highest IoU first: the ground-truth boxes found."""
    pairs = sorted(((iou(g, d), i, j) for i, g in enumerate(gt) for j, d in enumerate(dets)), reverse=True)
    used_g, used_d, found = set(), set(), 0
    for v, i, j in pairs:
        if v >= threshold and i not in used_g and j not in used_d:
            used_g.add(i)
            used_d.add(j)
            found += 1
    return found


def people(root: Path = ROOT):
    """(image path, ground-truth boxes of annotated people with at least one keypoint)."""
    data = json.loads((root / "annotations" / "person_keypoints.json").read_text())
    for img in sorted(data["images"], key=lambda i: i["file_name"]):
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] > 0]
        yield root / "images" / img["file_name"], boxes


def mediapipe_boxes(rgb: np.ndarray) -> list:
    """The one person mediapipe's legacy Pose solution finds (BlazePose detector, then the
    landmarks), as the box around its visible landmarks."""
    import mediapipe as mp
    with mp.solutions.pose.Pose(static_image_mode=True, min_detection_confidence=0.3) as pose:
        r = pose.process(rgb)
    if r.pose_landmarks is None:
        return []
    h, w = rgb.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in r.pose_landmarks.landmark if p.visibility > 0.3])
    if len(pts) < 2:
        return []
    lo, hi = pts.min(0), pts.max(0)
    return [[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", default="hog", help="hog or an .onnx file (hrfast.detect)")
    ap.add_argument("--mediapipe", action="store_true", help="mediapipe's BlazePose instead")
    ap.add_argument("--det-thre", type=float, default=0.3)
    args = ap.parse_args()
    if args.mediapipe:
        name, detect = "mediapipe 0.10.21 BlazePose (Pose solution)", mediapipe_boxes
    else:
        from hrfast.detect import build_detector
        det = build_detector(args.detector, score_threshold=args.det_thre)
        name, detect = args.detector, lambda rgb: det(rgb)[:, :4].tolist()
    rows, total_gt, total_found, total_det = [], 0, 0, 0
    for path, gt in people():
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        dets = detect(rgb)
        found = matches(gt, dets)
        rows.append(f"| {path.name} | {len(gt)} | {len(dets)} | {found} |")
        total_gt, total_found, total_det = total_gt + len(gt), total_found + found, total_det + len(dets)
    print(f"detector: {name}\n\n| image | people | boxes | found (IoU >= 0.5) |\n|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"| all | {total_gt} | {total_det} | {total_found} (recall {total_found / max(total_gt, 1):.0%}, "
          f"precision {total_found / max(total_det, 1):.0%}) |")


if __name__ == "__main__":
    main()
