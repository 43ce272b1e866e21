"""OKS non-maximum suppression and the keypoint rescoring of COCO evaluation.

``oks_nms`` runs ``torch.ops.hrfast.oks_nms`` (C++) when the extension is built, else
``oks_nms_ref`` (numpy-free PyTorch, same signature). NMS over one image's people is a short
sequential loop, so CUDA inputs are served on the CPU and the result comes back on their device.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._extension import HAS_EXTENSION

# COCO keypoint sigmas (cocoapi, person_keypoints): per-joint falloff of the OKS.
COCO_SIGMAS = torch.tensor([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                            .87, .87, .89, .89], dtype=torch.float64) / 10.0


def _prepare(keypoints, scores, areas, threshold, sigmas):
    if not isinstance(keypoints, torch.Tensor) or keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        shape = tuple(keypoints.shape) if isinstance(keypoints, torch.Tensor) else type(keypoints).__name__
        raise ValueError(f"keypoints must be a (N, K, 3) tensor of x, y, score, got {shape}")
    N, K = keypoints.shape[:2]
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()
    areas = torch.as_tensor(areas, dtype=torch.float64).reshape(-1).cpu()
    if scores.numel() != N:
        raise ValueError(f"scores must be (N,) = ({N},), got {scores.numel()} values")
    if areas.numel() != N:
        raise ValueError(f"areas must be (N,) = ({N},), got {areas.numel()} values")
    if sigmas is None:
        if K != 17:
            raise ValueError(f"sigmas must be given for K={K} joints (COCO sigmas are for 17)")
        sigmas = COCO_SIGMAS
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).cpu()
    if sigmas.numel() != K:
        raise ValueError(f"sigmas must be (K,) = ({K},), got {sigmas.numel()} values")
    return keypoints.detach().double().cpu(), scores, areas, float(threshold), sigmas


def oks_nms(keypoints: torch.Tensor, scores, areas, threshold: float = 0.9,
            sigmas: Optional[torch.Tensor] = None, vis_threshold: Optional[float] = None
            ) -> torch.Tensor:
    """Greedy OKS NMS as the official COCO keypoint evaluation (``oks_nms``).

    Args:
        keypoints: (N, K, 3) people of one image: x, y in image pixels and joint score.
        scores: (N,) person scores; areas: (N,) box areas in pixels^2.
        threshold: a person is dropped when its OKS with a kept, higher-scored one is above it.
        sigmas: (K,) per-joint OKS sigmas (COCO's when None and K == 17).
        vis_threshold: count only joints whose score exceeds it (the official ``in_vis_thre``,
            applied to the candidate's joints); None counts every joint.
    Returns:
        int64 indices of the kept people, highest score first, on ``keypoints``' device.
    """
    device = keypoints.device if isinstance(keypoints, torch.Tensor) else torch.device("cpu")
    kp, sc, ar, thr, sg = _prepare(keypoints, scores, areas, threshold, sigmas)
    vt = -1.0 if vis_threshold is None else float(vis_threshold)
    if HAS_EXTENSION:
        keep = torch.ops.hrfast.oks_nms(kp, sc, ar, thr, sg, vt)
    else:
        keep = _oks_nms_ref(kp, sc, ar, thr, sg, vt)
    return keep.to(device)


def oks_nms_ref(keypoints: torch.Tensor, scores, areas, threshold: float = 0.9,
                sigmas: Optional[torch.Tensor] = None, vis_threshold: Optional[float] = None
                ) -> torch.Tensor:
    """Pure-PyTorch twin of :func:`oks_nms`."""
    device = keypoints.device if isinstance(keypoints, torch.Tensor) else torch.device("cpu")
    kp, sc, ar, thr, sg = _prepare(keypoints, scores, areas, threshold, sigmas)
    vt = -1.0 if vis_threshold is None else float(vis_threshold)
    return _oks_nms_ref(kp, sc, ar, thr, sg, vt).to(device)


def _oks_nms_ref(kp, sc, ar, thr, sg, vt):
    N = kp.shape[0]
    if N == 0:
        return torch.zeros(0, dtype=torch.long)
    var = (sg * 2) ** 2
    spacing = torch.finfo(torch.float64).eps  # np.spacing(1)
    # pairwise OKS, (N, N): row i is the kept person, column j the candidate
    d2 = ((kp[:, None, :, :2] - kp[None, :, :, :2]) ** 2).sum(-1)
    e = d2 / var / ((ar[:, None, None] + ar[None, :, None]) / 2 + spacing) / 2
    use = (kp[None, :, :, 2] > vt) if vt >= 0 else torch.ones_like(e, dtype=torch.bool)
    use = use.expand_as(e)
    cnt = use.sum(-1)
    oks = torch.where(cnt > 0, (torch.exp(-e) * use).sum(-1) / cnt.clamp(min=1), torch.zeros_like(cnt, dtype=e.dtype))
    # highest first, ties: later index first; a NaN score sorts as -inf (last), as the native op
    order = torch.argsort(torch.nan_to_num(sc, nan=float("-inf")), stable=True).flip(0)
    removed = torch.zeros(N, dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        removed |= oks[i] > thr
    return torch.tensor(keep, dtype=torch.long)


def rescore(keypoints: torch.Tensor, box_scores: torch.Tensor, vis_threshold: float = 0.2) -> torch.Tensor:
    """Official COCO-eval person score: box score x mean of the joint scores above
    ``vis_threshold`` (box score x 0 when none is). keypoints (N, K, 3), box_scores (N,) -> (N,)."""
    s = keypoints[..., 2]
    valid = s > vis_threshold
    n = valid.sum(-1)
    mean = torch.where(n > 0, (s * valid).sum(-1) / n.clamp(min=1), torch.zeros_like(s[..., 0]))
    return mean * torch.as_tensor(box_scores, dtype=mean.dtype, device=mean.device)


def _register_fake() -> None:
    if not HAS_EXTENSION:
        return

    @torch.library.register_fake("hrfast::oks_nms")
    def _(keypoints, scores, areas, threshold, sigmas, vis_threshold):
        ctx = torch.library.get_ctx()
        return keypoints.new_empty((ctx.new_dynamic_size(),), dtype=torch.long)


_register_fake()
