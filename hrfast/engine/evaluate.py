"""Evaluation: COCO keypoint AP here, MPII PCKh in :mod:`hrfast.engine.pckh`.

``predict_dataset`` (:mod:`hrfast.engine.predict`) runs a model over a loader and returns one
record per person. ``coco_results`` applies the official rescoring and OKS NMS per image and
produces the COCO results list. ``coco_eval`` scores it with pycocotools. ``evaluate`` chains
them for a COCO-format dataset (gathering the predictions of all ranks under
torch.distributed), or hands an MPII dataset to PCKh. ``evaluate_checkpoint`` is ``hrfast
eval``: a config and a weights file to the table.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import quiet
from ..data.keypoints import COCO17
from ..deploy import maybe_optimize
from ..device import apply_cudnn_settings
from ..models import HRNet
from ..ops.nms import oks_nms, rescore
from ..outputs import write_json
from ..settings import settings_of
from ..weights import load_weights
from .data import build_dataset, dataset_paths, loader_workers, make_loader
from .pckh import PCKH_NAMES, evaluate_pckh, format_pckh
from .predict import gather_records, predict_dataset
from .wholebody import format_wholebody, is_wholebody_stats, wholebody_eval

STATS_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def coco_results(records: List[Dict], in_vis_thre: float = 0.2, oks_thre: float = 0.9,
                 use_nms: bool = True, sigmas: Optional[Sequence[float]] = None,
                 category_id: int = 1) -> List[Dict]:
    """Official post-processing: rescore each person (box score x mean confident joint score),
    OKS NMS per image with the keypoint set's ``sigmas`` (COCO's when None), then the COCO
    results format (``category_id``, flat keypoints)."""
    sigmas = None if sigmas is None else torch.tensor(list(sigmas), dtype=torch.float64)
    by_image = defaultdict(list)
    for r in records:
        by_image[r["image_id"]].append(r)
    out = []
    for image_id, people in by_image.items():
        kp = torch.from_numpy(np.stack([p["keypoints"] for p in people])).double()
        scores = rescore(kp, torch.tensor([p["score"] for p in people], dtype=torch.float64), in_vis_thre)
        keep = range(len(people))
        if use_nms and len(people) > 1:
            keep = oks_nms(kp, scores, torch.tensor([p["area"] for p in people]), oks_thre, sigmas).tolist()
        for i in keep:
            out.append({"image_id": int(image_id), "category_id": int(category_id),
                        "keypoints": [round(float(v), 3) for v in kp[i].reshape(-1)],
                        "score": float(scores[i])})
    return out


def coco_eval(ann_file, results: List[Dict], results_file: Optional[Path] = None,
              sigmas: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """COCOeval keypoints of ``results`` against ``ann_file`` with the OKS ``sigmas`` of the
    keypoint set (COCOeval's COCO-17 ones when None); returns the ten standard stats."""
    if not results:
        return {k: 0.0 for k in STATS_NAMES}
    if results_file is not None:
        write_json(results_file, results)
    with quiet():
        gt = COCO(str(ann_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(list(sigmas), dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STATS_NAMES, ev.stats)}


def primary_metric(stats: Dict[str, float]) -> float:
    """The figure that picks the best model: COCO AP, or MPII's mean PCKh@0.5 (percent)."""
    return stats["AP"] if "AP" in stats else stats["Mean"]


def format_stats(stats: Dict[str, float]) -> str:
    """The stats as a two-line Markdown-style table, the official print layout (COCO's, or
    MPII's PCKh table)."""
    if all(k in stats for k in PCKH_NAMES):
        return format_pckh(stats)
    if is_wholebody_stats(stats):
        return format_wholebody(stats)
    names = [k for k in STATS_NAMES if k in stats]
    head = "| " + " | ".join(names) + " |"
    rule = "|" + "|".join("---" for _ in names) + "|"
    vals = "| " + " | ".join(f"{stats[k]:.3f}" for k in names) + " |"
    return "\n".join([head, rule, vals])


def evaluate(model, loader, ann_file, device="cpu", flip_test: bool = True, method: str = "quarter",
             blur_kernel: int = 11, results_file=None, oks_thre: float = 0.9, in_vis_thre: float = 0.2,
             amp_dtype=None, channels_last: bool = False, progress: bool = True,
             shift_heatmap: bool = True) -> Dict[str, float]:
    """Predict, gather across ranks (torch.distributed), post-process and score on rank 0.
    Other ranks return an empty dict. An MPII dataset is scored with PCKh against its
    ``gt_file`` instead (``ann_file`` unused)."""
    if getattr(loader.dataset, "kind", "coco") == "mpii":
        return evaluate_pckh(model, loader, loader.dataset.gt_file, device, flip_test, method, blur_kernel,
                             amp_dtype, channels_last, progress, shift_heatmap)
    records = predict_dataset(model, loader, device, flip_test, shift_heatmap, method, blur_kernel, amp_dtype,
                              channels_last, progress)
    gathered = gather_records(records)
    if gathered is None:
        return {}
    # a DistributedSampler pads with repeats: keep one record per (image, center, scale, score)
    seen, records = set(), []
    for r in gathered:
        key = (r["image_id"], tuple(np.round(r["center"], 3)), tuple(np.round(r["scale"], 4)), r["score"])
        if key not in seen:
            seen.add(key)
            records.append(r)
    keypoints = getattr(loader.dataset, "keypoints", COCO17)
    results = coco_results(records, in_vis_thre, oks_thre, sigmas=keypoints.sigmas,
                           category_id=getattr(loader.dataset, "category_id", 1))
    if getattr(loader.dataset, "wholebody", False):
        return wholebody_eval(ann_file, results, results_file)
    return coco_eval(ann_file, results, results_file, sigmas=keypoints.sigmas)


def evaluate_checkpoint(cfg, checkpoint, results_file: Path, device: torch.device, settings,
                        runtime: Optional[str] = None, dtype: Optional[str] = None,
                        progress: bool = True) -> Dict[str, float]:
    """Build the model of ``cfg`` (a config, or :class:`hrfast.settings.Settings`), load
    ``checkpoint`` (strictly, weights only), optionally through ``hrfast.optimize`` on
    ``runtime`` in ``dtype``, and evaluate it on the test set with ``settings``
    (:func:`hrfast.inference.inference_settings`). The COCO results go to ``results_file``."""
    s = settings_of(cfg)
    apply_cudnn_settings(s.runtime.cudnn)
    model = HRNet.from_config(s.model.spec, backend=s.runtime.backend)
    load_weights(model, checkpoint)
    model.to(device)
    loader = make_loader(build_dataset(s.data, train=False), s.test.batch_size, False,
                         loader_workers(s.runtime.workers), 1, 0, 0)
    return evaluate(maybe_optimize(model, runtime, device, dtype), loader, dataset_paths(s.data, "test")[0], device,
                    settings.flip_test, settings.decode, results_file=results_file, oks_thre=s.test.oks_thre,
                    in_vis_thre=s.test.in_vis_thre, shift_heatmap=settings.shift_heatmap, progress=progress)
