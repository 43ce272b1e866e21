"""Residual blocks of HRNet: the BasicBlock of the branches and the Bottleneck of layer1.

Attribute names (``conv1``, ``bn1``, ..., ``downsample``) are those of the official pose_hrnet,
so that state_dict keys line up with its checkpoints.

Fusion hook: every BN that a ReLU follows (with the residual add between them at the end of a
block) goes through :func:`norm_act`. A module's ``norm_act_impl`` is None (the reference: BN,
add, ReLU as three modules) or an object with ``applies(bn, x, residual) -> bool`` and
``__call__(x, bn, residual, relu)`` that computes the same (``hrfast.ops.norm_act.
install_norm_act`` installs one for training on the CPU or CUDA). Parameters and state_dict
keys never change with it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

# The official code builds every BatchNorm with momentum 0.1 (PyTorch's default, spelled out
# there as BN_MOMENTUM); we keep it explicit for the same reason.
BN_MOMENTUM = 0.1


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def projection(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """1x1 conv + BN shortcut used when a block changes width (keys ``downsample.0/1``)."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), batch_norm(out_channels))


def norm_act(owner: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """relu(bn(x) [+ residual]) for ``owner`` (a module with ``relu`` and ``norm_act_impl``)."""
    impl = getattr(owner, "norm_act_impl", None)   # None too for a module pickled before the hook
    if impl is not None and impl.applies(bn, x, residual):
        return impl(x, bn, residual, True)
    out = bn(x)
    return owner.relu(out if residual is None else out + residual)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: (B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = batch_norm(planes)
        self.downsample = downsample
        self.stride = stride
        self.norm_act_impl = None   # the fusion hook (module doc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = norm_act(self, self.bn1, self.conv1(x))
        return norm_act(self, self.bn2, self.conv2(out), residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block: (B, C_in, H, W) -> (B, 4*planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = batch_norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.norm_act_impl = None   # the fusion hook (module doc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = norm_act(self, self.bn1, self.conv1(x))
        out = norm_act(self, self.bn2, self.conv2(out))
        return norm_act(self, self.bn3, self.conv3(out), residual)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(block: type, inplanes: int, planes: int, num_blocks: int,
                stride: int = 1) -> nn.Sequential:
    """A run of ``num_blocks`` blocks; the first one projects when width or stride changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = projection(inplanes, out_channels, stride)
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)
