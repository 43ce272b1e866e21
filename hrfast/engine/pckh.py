"""MPII evaluation: PCKh, as the official HRNet/SimpleBaseline ``MPIIDataset.evaluate``.

A joint is correct when its distance to the ground truth, divided by the person's head size,
is at most the threshold. The head size is 0.6 times the diagonal of the annotated head box
(``SC_BIAS``). Joints marked missing in the ground truth do not count. The table gives the
head, the mean of each left/right pair, and the mean over all joints except the pelvis and
the thorax, each joint weighted by how often it is visible; ``Mean@0.1`` is the same mean at
threshold 0.1. The ground truth is the official ``annot/gt_valid.mat``: ``dataset_joints``
(names), ``jnt_missing`` (16, N), ``pos_gt_src`` (16, 2, N) and ``headboxes_src`` (2, 2, N),
in MATLAB's 1-based pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from ..data.mpii import MAT_NAMES
from ..extras import require
from ..tables import markdown_table
from .predict import gather_records, predict_dataset

SC_BIAS = 0.6
PCKH_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
# each table column: the joints it averages (MAT_NAMES)
_GROUPS = {"Head": ("head",), "Shoulder": ("lsho", "rsho"), "Elbow": ("lelb", "relb"), "Wrist": ("lwri", "rwri"),
           "Hip": ("lhip", "rhip"), "Knee": ("lkne", "rkne"), "Ankle": ("lank", "rank")}


def load_ground_truth(path) -> Dict[str, np.ndarray]:
    """The arrays of an official ``gt_<set>.mat``, with the joints in :data:`MAT_NAMES` order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII ground truth not found: {path} (the official annot/gt_valid.mat)")
    loadmat = require("scipy.io", "MPII evaluation (annot/gt_valid.mat is a MATLAB file)").loadmat
    try:
        mat = loadmat(str(path))
        names = [str(np.squeeze(n)) for n in np.asarray(mat["dataset_joints"]).ravel()]
        order = [names.index(n) for n in MAT_NAMES]
        gt = {"missing": np.asarray(mat["jnt_missing"], np.float64)[order],
              "positions": np.asarray(mat["pos_gt_src"], np.float64)[order],
              "head_boxes": np.asarray(mat["headboxes_src"], np.float64)}
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"MPII ground truth {path} lacks dataset_joints, jnt_missing, pos_gt_src or "
                         f"headboxes_src as the official file has them: {exc!r}") from None
    return gt


def pckh(preds: np.ndarray, gt: Dict[str, np.ndarray]) -> Dict[str, float]:
    """PCKh@0.5 per table column and the means (percent). ``preds`` (N, 16, 2): 0-based image
    pixels, in the order of the ground truth's people."""
    preds = np.asarray(preds, np.float64)[..., :2] + 1.0            # to MATLAB's 1-based pixels
    n = gt["positions"].shape[-1]
    if preds.shape != (n, 16, 2):
        raise ValueError(f"preds must be ({n}, 16, 2) (one row per ground-truth person), got {preds.shape}")
    visible = 1.0 - gt["missing"]                                    # (16, N)
    dist = np.linalg.norm(preds.transpose(1, 2, 0) - gt["positions"], axis=1)        # (16, N)
    head = np.linalg.norm(gt["head_boxes"][1] - gt["head_boxes"][0], axis=0) * SC_BIAS  # (N,)
    err = dist / head[None, :] * visible
    count = visible.sum(axis=1)                                      # (16,)

    def per_joint(threshold: float) -> np.ndarray:
        hits = ((err <= threshold) * visible).sum(axis=1)
        return 100.0 * hits / np.maximum(count, 1e-12)

    at5, at1 = per_joint(0.5), per_joint(0.1)
    counted = np.array([name not in ("pelv", "thor") for name in MAT_NAMES]) * count
    weights = counted / counted.sum()
    index = {name: i for i, name in enumerate(MAT_NAMES)}
    out = {col: float(np.mean([at5[index[j]] for j in joints])) for col, joints in _GROUPS.items()}
    out["Mean"] = float((at5 * weights).sum())
    out["Mean@0.1"] = float((at1 * weights).sum())
    return out


def format_pckh(stats: Dict[str, float]) -> str:
    """The official PCKh table (percent, three decimals)."""
    return markdown_table(PCKH_NAMES, [[f"{stats[k]:.3f}" for k in PCKH_NAMES]])


def evaluate_pckh(model, loader, gt_file, device="cpu", flip_test: bool = True, method: str = "quarter",
                  blur_kernel: int = 11, amp_dtype=None, channels_last: bool = False,
                  progress: bool = True, shift_heatmap: bool = True) -> Dict[str, float]:
    """Predict every person of an MPII loader (flip test, decoding) and score PCKh against
    ``gt_file``; under torch.distributed, rank 0 gathers and scores, the others return {}."""
    records = predict_dataset(model, loader, device, flip_test, shift_heatmap, method, blur_kernel, amp_dtype,
                              channels_last, progress)
    records = gather_records(records)
    if records is None:
        return {}
    by_index = {r["image_id"]: r["keypoints"][:, :2] for r in records}   # the file's order; pads repeat
    preds = np.stack([by_index[i] for i in sorted(by_index)])
    return pckh(preds, load_ground_truth(gt_file))
