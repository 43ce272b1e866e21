"""Inference over a dataset: flip test and decoding to image keypoints, one record per person."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from ..data.keypoints import COCO17
from ..inference import infer_heatmaps
from ..ops.decode import final_preds


@torch.no_grad()
def predict_dataset(model, loader, device="cpu", flip_test: bool = True, shift_heatmap: bool = True,
                    method: str = "quarter", blur_kernel: int = 11, amp_dtype=None,
                    channels_last: bool = False, progress: bool = True) -> List[Dict]:
    """One record per sample: ``image_id``, ``keypoints`` (K, 3) in image pixels with score,
    ``score`` (box score), ``area`` (of the box, center/scale in pixels), ``center``, ``scale``."""
    model.eval()
    device = torch.device(device)
    pairs = getattr(loader.dataset, "keypoints", COCO17).flip_pairs   # the dataset's, not always COCO's
    records = []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            hm = infer_heatmaps(model, x, flip_test, shift_heatmap, pairs=pairs)
        preds = final_preds(hm.cpu(), batch["center"], batch["scale"], method, blur_kernel)
        s = batch["scale"].double() * 200.0
        for i in range(preds.shape[0]):
            records.append({"image_id": int(batch["image_id"][i]), "keypoints": preds[i].numpy(),
                            "score": float(batch["score"][i]), "area": float(s[i, 0] * s[i, 1]),
                            "center": batch["center"][i].numpy(), "scale": batch["scale"][i].numpy()})
    return records


def gather_records(records: List[Dict]) -> Optional[List[Dict]]:
    """Under torch.distributed with several ranks: every rank's records on rank 0 (None on the
    others); otherwise ``records`` as they are."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return records
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, records)
    return [r for part in gathered for r in part] if dist.get_rank() == 0 else None
