"""Heatmaps of a pose network with the official flip test: what evaluation (``hrfast.engine``)
and ``PoseEstimator`` both run, so neither depends on the other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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


@dataclass(frozen=True)
class InferenceSettings:
    """How heatmaps are made and read: the flip test, its one-pixel shift and the decoding,
    with what set each (a flag or a config key), for the one line a run prints."""
    flip_test: bool
    shift_heatmap: bool
    decode: str
    flip_source: str
    decode_source: str

    def describe(self) -> str:
        shift = "" if not self.flip_test or self.shift_heatmap else ", unshifted (TEST.SHIFT_HEATMAP)"
        return (f"flip test {'on' if self.flip_test else 'off'} ({self.flip_source}){shift}, "
                f"decoding {self.decode} ({self.decode_source})")


def inference_settings(test, no_flip: bool = False, decode: Optional[str] = None) -> InferenceSettings:
    """The flags when given, else the test settings (:class:`hrfast.settings.TestSettings`) of
    the official keys: ``TEST.FLIP_TEST``, ``TEST.SHIFT_HEATMAP``, ``HRFAST.DECODE``, and
    ``TEST.POST_PROCESS`` (false: argmax decoding, as the official ``get_final_preds`` without
    post-processing)."""
    flip = False if no_flip else test.flip_test
    if decode:
        method, source = decode, "--decode"
    elif not test.post_process:
        method, source = "argmax", "TEST.POST_PROCESS false"
    else:
        method, source = test.decode, "HRFAST.DECODE"
    return InferenceSettings(flip, test.shift_heatmap, method, "--no-flip" if no_flip else "TEST.FLIP_TEST", source)
