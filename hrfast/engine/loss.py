"""Heatmap losses of SimpleBaseline/HRNet."""
from __future__ import annotations

from torch import nn


class JointsMSELoss(nn.Module):
    """Mean squared error between predicted and target heatmaps, per joint, times 0.5.

    pred, target: (B, K, H, W); target_weight: (B, K). With ``use_target_weight`` both maps of a
    joint are scaled by its weight (zero for unlabelled joints) before the squared error, as
    the official loss does. Returns the mean over joints, batch and pixels (a scalar).
    """

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = use_target_weight

    def per_joint(self, pred, target, target_weight):
        """(B, K) mean squared error per joint (weights applied), times 0.5."""
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                             f"and {tuple(target.shape)}")
        pred, target = pred.float(), target.float()
        if self.use_target_weight:
            w = target_weight.float()[..., None, None]
            pred, target = pred * w, target * w
        return 0.5 * (pred - target).pow(2).flatten(2).mean(-1)

    def reduce(self, per_joint):
        """The scalar loss of (B, K) per-joint losses: their mean."""
        return per_joint.mean()

    def forward(self, pred, target, target_weight):
        return self.reduce(self.per_joint(pred, target, target_weight))


class JointsOHKMMSELoss(JointsMSELoss):
    """Online hard keypoint mining: per person, the mean of the ``topk`` largest joint losses."""

    def __init__(self, use_target_weight: bool = True, topk: int = 8):
        super().__init__(use_target_weight)
        self.topk = topk

    def reduce(self, per_joint):
        k = min(self.topk, per_joint.shape[1])
        return per_joint.topk(k, dim=1).values.mean()
