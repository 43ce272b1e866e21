"""COCO-WholeBody evaluation: AP/AR of the body, feet, face, each hand and the whole body, each
part with its own keypoints and OKS sigmas, as COCO-WholeBody's evaluation (xtcocotools)
defines it.

pycocotools is the engine. For each part the ground truth and the results keep only that
part's keypoints; a person with none of them labelled (or whose part's ``*_valid`` flag is
false) is ignored for that part, as xtcocotools ignores a ground truth with no labelled
keypoint of the evaluated part. The object area stays the person's (``use_area``), and a
result's area is that of its body keypoints' extent, as xtcocotools' ``loadRes`` makes it.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import quiet
from ..data.wholebody import NUM_WHOLEBODY, PARTS, WHOLEBODY_SIGMAS, flat_keypoints, split_parts
from ..outputs import write_json

STATS = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
ROWS = (*PARTS, "whole body")       # the six rows of the table, mmpose's order


def _part_slice(row: str) -> slice:
    if row == "whole body":
        return slice(0, NUM_WHOLEBODY)
    _, _, start, count = PARTS[row]
    return slice(start, start + count)


def _part_ground_truth(dataset: Dict, row: str) -> Dict:
    part = _part_slice(row)
    out = copy.deepcopy({k: v for k, v in dataset.items() if k != "annotations"})
    anns = []
    for ann in dataset["annotations"]:
        kps = np.asarray(flat_keypoints(ann) if "face_kpts" in ann else ann["keypoints"], dtype=np.float64)
        kps = kps.reshape(-1, 3)[part]
        anns.append({**{k: v for k, v in ann.items() if not k.endswith(("_kpts", "_box", "_valid"))},
                     "keypoints": kps.reshape(-1).tolist(), "num_keypoints": int((kps[:, 2] > 0).sum())})
    out["annotations"] = anns
    for cat in out.get("categories", []):
        cat["keypoints"] = [f"k{i}" for i in range(part.stop - part.start)]
        cat.pop("skeleton", None)
    return out


def _part_eval(dataset: Dict, results: List[Dict], row: str) -> List[float]:
    part = _part_slice(row)
    gt = COCO()
    gt.dataset = _part_ground_truth(dataset, row)
    gt.createIndex()
    mine = [{**r, "keypoints": list(np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[part].reshape(-1))}
            for r in results]
    dt = gt.loadRes(mine)
    for r, d in zip(results, dt.dataset["annotations"]):   # the area of the body's extent
        body = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[:17]
        d["area"] = float(np.ptp(body[:, 0]) * np.ptp(body[:, 1]))
    ev = COCOeval(gt, dt, "keypoints")
    ev.params.useSegm = None
    ev.params.kpt_oks_sigmas = np.asarray(WHOLEBODY_SIGMAS[part], dtype=np.float64)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats]


def wholebody_eval(ann_file, results: List[Dict], results_file: Optional[Path] = None) -> Dict[str, float]:
    """The six rows' stats of ``results`` (COCO results with 133 flat keypoints) against the
    COCO-WholeBody file ``ann_file``: ``"AP"`` ... ``"AR (L)"`` are the whole body's (the
    figure that picks the best model), ``"body AP"``, ``"foot AR .5"``, ... the parts'.
    ``results_file`` receives the results in the official format (one field per part)."""
    if results_file is not None:
        write_json(results_file, [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                                   **split_parts(r["keypoints"])} for r in results])
    dataset = json.loads(Path(ann_file).read_text())
    stats: Dict[str, float] = {}
    for row in ROWS:
        values = [0.0] * len(STATS)
        if results:
            with quiet():
                values = _part_eval(dataset, results, row)
        prefix = "" if row == "whole body" else f"{row} "
        stats.update({prefix + k: v for k, v in zip(STATS, values)})
    return stats


def is_wholebody_stats(stats: Dict[str, float]) -> bool:
    return "body AP" in stats


def format_wholebody(stats: Dict[str, float]) -> str:
    """The six-row table: AP, AP .5, AP .75, AR, AR .5 per part and for the whole body."""
    cols = ("AP", "AP .5", "AP .75", "AR", "AR .5")
    lines = ["| part | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in ROWS:
        prefix = "" if row == "whole body" else f"{row} "
        lines.append(f"| {row} | " + " | ".join(f"{stats[prefix + c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)
