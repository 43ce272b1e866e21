"""Shared cases of the op benchmarks: hrfast op vs the numpy transcription of the official
per-sample code, on a batch of 32 persons x 17 joints (the issue's reference workload), or
x 133 (COCO-WholeBody)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import official_numpy as official  # noqa: E402

from hrfast.ops.decode import decode_heatmaps  # noqa: E402
from hrfast.ops.targets import gaussian_targets  # noqa: E402

B, K = 32, 17
# (input W, H), (heatmap W, H), sigma: W32 256x192 and 384x288 settings
SIZES = {"64x48": ((192, 256), (48, 64), 2.0), "96x72": ((288, 384), (72, 96), 3.0)}


def make_joints(image_size, seed=0, joints=K):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(B, joints, 2, generator=g) * torch.tensor(image_size, dtype=torch.float32)
    visible = (torch.rand(B, joints, generator=g) > 0.15).float()
    return xy, visible


def make_heatmaps(heatmap_size, seed=0, joints=K):
    W, H = heatmap_size
    g = np.random.default_rng(seed)
    mu = g.uniform([4, 4], [W - 5, H - 5], size=(B, joints, 2))
    ys, xs = np.mgrid[0:H, 0:W]
    hm = np.exp(-((xs - mu[..., 0, None, None]) ** 2 + (ys - mu[..., 1, None, None]) ** 2) / 8.0)
    return (hm + 0.01 * g.standard_normal(hm.shape)).astype(np.float32)


def cases(size: str, k: int = K):
    """name -> (hrfast callable, official numpy callable) for one heatmap size, ``k`` joints."""
    image_size, heatmap_size, sigma = SIZES[size]
    joints, visible = make_joints(image_size, joints=k)
    jn, vn = joints.double().numpy(), visible.numpy()
    hm = make_heatmaps(heatmap_size, joints=k)
    hm_t = torch.from_numpy(hm)

    def official_targets():
        for b in range(B):
            official.msra_target(jn[b], vn[b], image_size, heatmap_size, sigma)

    return {
        "targets_msra": (lambda: gaussian_targets(joints, visible, image_size, heatmap_size, sigma),
                         official_targets),
        "decode_quarter": (lambda: decode_heatmaps(hm_t, "quarter"), lambda: official.quarter_decode(hm)),
        "decode_dark": (lambda: decode_heatmaps(hm_t, "dark"), lambda: official.dark_decode(hm)),
        "decode_udp": (lambda: decode_heatmaps(hm_t, "udp"), lambda: official.udp_decode(hm)),
    }
