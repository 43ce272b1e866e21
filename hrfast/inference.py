"""Heatmaps of a pose network with the official flip test: what evaluation (``hrfast.engine``)
and ``PoseEstimator`` both run, so neither depends on the other."""
from __future__ import annotations

import torch

from .data.coco_meta import FLIP_PAIRS, flip_permutation


def flip_back(heatmaps: torch.Tensor, perm) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input back to the original frame: mirror the width
    and swap the left/right joint channels."""
    return heatmaps.flip(3)[:, perm]


@torch.no_grad()
def infer_heatmaps(model, images: torch.Tensor, flip_test: bool = True, shift_heatmap: bool = True,
                   perm=None, pairs=FLIP_PAIRS) -> torch.Tensor:
    """(B, 3, H, W) -> (B, K, h, w) heatmaps, averaged with the flipped input's when
    ``flip_test``. ``shift_heatmap`` moves the flipped maps one pixel right, as the official
    code does to undo the flip's half-pixel misalignment. ``pairs``: the dataset's left/right
    joint pairs (COCO's by default)."""
    out = model(images).float()
    if flip_test:
        perm = perm or flip_permutation(out.shape[1], pairs)
        flipped = flip_back(model(images.flip(3)).float(), perm)
        if shift_heatmap:
            flipped = torch.cat([flipped[..., :1], flipped[..., :-1]], dim=3)
        out = (out + flipped) * 0.5
    return out
