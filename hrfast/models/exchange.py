"""The HRNet exchange unit: multi-resolution fusion of parallel branches.

For output branch ``i`` and inputs ``x_0 .. x_{n-1}`` (branch ``j`` at 1/2^j of branch 0's size)::

    y_i = ReLU( x_i + sum_{j>i} up_{2^(j-i)}(BN(conv1x1(x_j))) + sum_{j<i} down_{i-j}(x_j) )

where ``down_k`` is k strided 3x3 conv+BN with ReLU between them (not after the last), and
``up`` is nearest upsampling (the pose and classification nets) or bilinear resizing to x_i's
size (HRNetV2 of the face and segmentation nets; ``upsample="bilinear"``).

The unit *is* a ``ModuleList`` of ``ModuleList`` so that its parameters keep the official
key names ``fuse_layers.{i}.{j}.…`` (``None`` where ``i == j``, exactly as the official code).

Fusion hook: ``unit.fused_impl`` is None (the reference forward) or an object with
``applies(unit, xs) -> bool`` and ``__call__(unit, xs) -> list of outputs``; ``forward`` calls it
when it applies. An implementation reads the parameters from the same sub-modules, so the
state_dict is the same whichever runs (``hrfast.models.backends``).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import batch_norm, conv1x1, conv3x3

UPSAMPLE_MODES = ("nearest", "bilinear")


def _upsample_path(in_channels: int, out_channels: int, factor: int, mode: str) -> nn.Sequential:
    # Upsample has no parameters; for nearest it stays in the Sequential (index 2) as in the
    # official layout, so the reference path is the plain module call. The bilinear nets
    # resize to the target's size in their forward instead (``ExchangeUnit._up``).
    layers = [conv1x1(in_channels, out_channels), batch_norm(out_channels)]
    if mode == "nearest":
        layers.append(nn.Upsample(scale_factor=factor, mode="nearest"))
    return nn.Sequential(*layers)


def _downsample_path(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    layers = []
    for k in range(steps):
        last = k == steps - 1
        width = out_channels if last else in_channels
        step = [conv3x3(in_channels, width, stride=2), batch_norm(width)]
        if not last:
            step.append(nn.ReLU(inplace=True))
        layers.append(nn.Sequential(*step))
    return nn.Sequential(*layers)


class ExchangeUnit(nn.ModuleList):
    """Fuse ``n`` branches into ``num_outputs`` branches (``num_outputs`` is n, or 1 when only the
    high-resolution output is kept, as in the last module of the pose net).

    Args:
        channels: channels of each input branch, highest resolution first.
        num_outputs: how many output branches to produce (from the highest resolution down).
        upsample: "nearest" (by 2^(j-i)) or "bilinear" (to the output's size, with
            ``align_corners``).
    Input: list of n tensors, branch j of shape (B, channels[j], H / 2^j, W / 2^j).
    Output: list of ``num_outputs`` tensors, branch i of shape (B, channels[i], H/2^i, W/2^i).
    """

    def __init__(self, channels: Sequence[int], num_outputs: int, upsample: str = "nearest",
                 align_corners: bool = False) -> None:
        n = len(channels)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if n < 2:
            raise ValueError(f"ExchangeUnit needs at least 2 branches, got channels={list(channels)}")
        if not 1 <= num_outputs <= n:
            raise ValueError(f"num_outputs must be in [1, {n}], got {num_outputs}")
        rows = []
        for i in range(num_outputs):
            row: List[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(_upsample_path(channels[j], channels[i], 2 ** (j - i), upsample))
                elif j == i:
                    row.append(None)
                else:
                    row.append(_downsample_path(channels[j], channels[i], i - j))
            rows.append(nn.ModuleList(row))
        super().__init__(rows)
        self.channels = list(channels)
        self.num_outputs = num_outputs
        self.upsample = upsample
        self.align_corners = bool(align_corners)
        self.fused_impl = None   # the fusion hook (module doc)

    def check_inputs(self, xs: Sequence[torch.Tensor]) -> None:
        """Raise a ValueError naming the branch when shapes do not chain by factors of 2."""
        if len(xs) != len(self.channels):
            raise ValueError(f"ExchangeUnit expected {len(self.channels)} branches, got {len(xs)}")
        b, _, h, w = xs[0].shape
        for j, (x, c) in enumerate(zip(xs, self.channels)):
            want = (b, c, h // 2 ** j, w // 2 ** j)
            if x.dim() != 4 or tuple(x.shape) != want:
                raise ValueError(f"ExchangeUnit branch {j}: expected shape {want} "
                                 f"(B, C_j, H/2^j, W/2^j), got {tuple(x.shape)}")

    def forward_reference(self, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Eager PyTorch fusion; summation order is the official one (j = 0, 1, ..., n-1)."""
        out = []
        n = len(self.channels)
        for i in range(self.num_outputs):
            row = self[i]
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, n):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + self._up(row[j](xs[j]), xs[i])
                else:
                    y = y + row[j](xs[j])
            out.append(torch.relu(y))
        return out

    def _up(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """An upsample path's output at ``like``'s resolution (nearest is in the path itself)."""
        if self.upsample == "nearest":
            return z
        return F.interpolate(z, size=like.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        impl = self.fused_impl
        if impl is not None and impl.applies(self, xs):
            return impl(self, xs)
        return self.forward_reference(xs)
