"""The HRNet backbone and the pose HRNet (Sun et al., CVPR 2019), with the official module
names (``conv1`` ... ``stage4`` are the same in the pose, classification, face and
segmentation repositories; the heads of the other three are in :mod:`hrfast.models.family`).

Shapes: input (B, 3, H, W) with H and W multiples of 32, output heatmaps (B, K, H/4, W/4).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..config import Config, get_config, model_spec
from .backends import backend_names, install_backend
from .blocks import BLOCKS, batch_norm, conv3x3, make_blocks, norm_act
from .exchange import ExchangeUnit


class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks followed by an exchange unit.

    Input: list of n tensors (branch j at 1/2^j resolution). Output: list of n tensors, or of 1
    when ``multi_scale_output`` is False (only the highest resolution is fused and returned).
    """

    def __init__(self, block: type, num_blocks: Sequence[int], in_channels: Sequence[int],
                 channels: Sequence[int], multi_scale_output: bool = True, upsample: str = "nearest",
                 align_corners: bool = False) -> None:
        super().__init__()
        n = len(channels)
        if not (len(num_blocks) == len(in_channels) == n):
            raise ValueError(f"NUM_BLOCKS {list(num_blocks)}, input channels {list(in_channels)} and "
                             f"NUM_CHANNELS {list(channels)} must all have one entry per branch")
        self.num_branches = n
        self.multi_scale_output = multi_scale_output
        self.branches = nn.ModuleList(
            make_blocks(block, in_channels[b], channels[b], num_blocks[b]) for b in range(n))
        self.out_channels = [c * block.expansion for c in channels]
        self.fuse_layers: Optional[ExchangeUnit] = None
        if n > 1:
            self.fuse_layers = ExchangeUnit(self.out_channels, n if multi_scale_output else 1, upsample, align_corners)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        return self.fuse_layers(xs)


def make_transition(prev_channels: Sequence[int], channels: Sequence[int]) -> nn.ModuleList:
    """Layers from a stage with ``prev_channels`` branches to one with ``channels`` branches.

    Existing branches get a 3x3 conv+BN+ReLU only when their width changes (else ``None``); each
    new branch is a chain of strided 3x3 conv+BN+ReLU from the lowest existing branch.
    """
    layers: List[Optional[nn.Module]] = []
    for i, c in enumerate(channels):
        if i < len(prev_channels):
            p = prev_channels[i]
            layers.append(None if p == c else
                          nn.Sequential(conv3x3(p, c), batch_norm(c), nn.ReLU(inplace=True)))
            continue
        steps = []
        src = prev_channels[-1]
        for k in range(i + 1 - len(prev_channels)):
            out = c if k == i - len(prev_channels) else src
            steps.append(nn.Sequential(conv3x3(src, out, stride=2), batch_norm(out), nn.ReLU(inplace=True)))
            src = out
        layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _apply_transition(transition: nn.ModuleList, xs: List[torch.Tensor], step_fn=None) -> List[torch.Tensor]:
    """Run a transition. ``step_fn(seq, x)`` replaces each (conv, BN, ReLU) step: the
    ``transition_impl`` hook (``hrfast.models.backends``), on the same modules."""
    out = []
    for i, layer in enumerate(transition):
        # New branches grow from the lowest-resolution existing branch.
        src = xs[min(i, len(xs) - 1)]
        if layer is None:
            out.append(src)
        elif step_fn is None:
            out.append(layer(src))
        elif isinstance(layer[0], nn.Conv2d):       # width change: one (conv, BN, ReLU)
            out.append(step_fn(layer, src))
        else:                                       # new branch: a chain of (conv, BN, ReLU)
            for step in layer:
                src = step_fn(step, src)
            out.append(src)
    return out


class HRNetBackbone(nn.Module):
    """Stem, ``layer1``, transitions and stages of HRNet, with the official key names; the
    task models add their head (pose: :class:`HRNet`; :mod:`hrfast.models.family`).

    ``spec`` keys: ``stem_channels``, ``stage1`` and ``stages`` (block, num_modules,
    num_blocks, num_channels), ``multi_scale_last`` (the last module keeps every branch:
    classification and HRNetV2; the pose net keeps branch 0 only), ``upsample`` ("nearest" or
    "bilinear") and ``align_corners`` of the exchange units. :meth:`forward_branches` returns
    the last stage's branches; ``out_channels`` their widths.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.multi_scale_last = bool(spec.get("multi_scale_last", False))
        stem = int(spec.get("stem_channels", 64))
        self.conv1 = conv3x3(3, stem, stride=2)
        self.bn1 = batch_norm(stem)
        self.conv2 = conv3x3(stem, stem, stride=2)
        self.bn2 = batch_norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.norm_act_impl = None   # the stem's fusion hook (hrfast.models.blocks)
        s1 = spec["stage1"]
        block1 = BLOCKS[s1["block"]]
        self.layer1 = make_blocks(block1, stem, s1["num_channels"][0], s1["num_blocks"][0])
        prev = [s1["num_channels"][0] * block1.expansion]
        stages = spec["stages"]
        for idx, stage in enumerate(stages, start=2):
            block = BLOCKS[stage["block"]]
            channels = [c * block.expansion for c in stage["num_channels"]]
            setattr(self, f"transition{idx - 1}", make_transition(prev, channels))
            setattr(self, f"stage{idx}", self._stage(stage, block, channels, last=idx == len(stages) + 1))
            prev = getattr(self, f"stage{idx}")[-1].out_channels
            if idx == len(stages) + 1 and not self.multi_scale_last:
                prev = prev[:1]
        self.num_stages = len(stages) + 1
        self.out_channels = list(prev)
        self.backend = "reference"
        self.transition_impl = None   # the transition hook (hrfast.models.backends)

    def _stage(self, stage: Mapping[str, Any], block: type, in_channels: List[int], last: bool) -> nn.Sequential:
        modules = []
        for m in range(stage["num_modules"]):
            # The pose net's last module fuses only into the high-resolution branch.
            multi = not (last and m == stage["num_modules"] - 1 and not self.multi_scale_last)
            hrm = HighResolutionModule(block, stage["num_blocks"], in_channels, stage["num_channels"],
                                       multi_scale_output=multi, upsample=self.spec.get("upsample", "nearest"),
                                       align_corners=bool(self.spec.get("align_corners", False)))
            modules.append(hrm)
            in_channels = hrm.out_channels
        return nn.Sequential(*modules)

    def init_weights(self) -> None:
        """Official initialization: conv weights N(0, 0.001), conv biases 0, BN weight 1 bias 0."""
        if next(self.parameters()).is_meta:
            return      # built for its shapes only (`hrfast info`): no values to fill
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    default_input_size = (192, 256)   # (width, height) when the spec names none

    @property
    def input_size(self) -> tuple:
        """(width, height) of the input image the config was made for (the official order)."""
        return tuple(self.spec.get("image_size", self.default_input_size))

    def exchange_units(self) -> List[ExchangeUnit]:
        return [m for m in self.modules() if isinstance(m, ExchangeUnit)]

    def set_backend(self, backend: str) -> "HRNetBackbone":
        """Choose the exchange-unit implementation; parameters and keys are unchanged.

        ``reference``: eager PyTorch. ``triton``: fused Triton kernels. ``auto``: fused kernels
        for CUDA inputs when Triton is usable, the reference otherwise. The names come from
        :mod:`hrfast.models.backends`, where the fused implementation registers itself.
        """
        if backend not in backend_names():
            raise ValueError(f"backend must be one of {backend_names()}, got {backend!r}")
        install_backend(self, backend)
        self.backend = backend
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():   # ONNX export traces with one checked example input
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"HRNet input x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"HRNet input x must be 4-D (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"HRNet input x must have {self.conv1.in_channels} channels (B, 3, H, W), "
                             f"got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"HRNet input x height and width must be multiples of 32 "
                             f"(4x stem and 3 halvings), got {h}x{w}")

    def forward_branches(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) -> the last stage's branches, branch j (B, out_channels[j], H/2^(j+2), W/2^(j+2))."""
        self._check_input(x)
        x = norm_act(self, self.bn1, self.conv1(x))
        x = norm_act(self, self.bn2, self.conv2(x))
        xs = [self.layer1(x)]
        for idx in range(2, self.num_stages + 1):
            step = self.transition_impl
            if step is not None and not step.applies(xs[-1]):
                step = None
            xs = _apply_transition(getattr(self, f"transition{idx - 1}"), xs, step)
            xs = getattr(self, f"stage{idx}")(xs)
        return xs


class HRNet(HRNetBackbone):
    """Pose HRNet; a drop-in for the official ``PoseHighResolutionNet`` (same state_dict keys).

    Build with :meth:`from_config` (a config name, a YAML path's :func:`hrfast.load_config`
    result, or a plain mapping). ``forward(x)``: x (B, 3, H, W), H and W multiples of 32, in
    input-image pixels normalized as ImageNet; returns heatmaps (B, K, H/4, W/4).
    """

    def __init__(self, spec: Mapping[str, Any], backend: str = "reference") -> None:
        super().__init__(spec)
        self.num_joints = int(spec["num_joints"])
        k = int(spec.get("final_conv_kernel", 1))
        self.final_layer = nn.Conv2d(self.out_channels[0], self.num_joints, k, stride=1, padding=1 if k == 3 else 0)
        self.init_weights()
        self.set_backend(backend)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, config: Union[str, Config, Mapping[str, Any]], backend: str = "reference",
                    **overrides: Any) -> "HRNet":
        """Build from a config name (see :func:`hrfast.available_configs`), a :class:`Config`
        (what :func:`hrfast.load_config` returns) or a model-spec mapping. ``overrides`` replace
        spec entries, e.g. ``num_joints=14``."""
        if isinstance(config, str):
            config = get_config(config)
        spec = model_spec(config) if isinstance(config, Config) else dict(config)
        spec.update(overrides)
        return cls(spec, backend=backend)

    @property
    def heatmap_size(self) -> tuple:
        """(width, height) of the output heatmaps for :attr:`input_size`."""
        w, h = self.input_size
        return (w // 4, h // 4)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> high-resolution features (B, C_0, H/4, W/4) before the final conv."""
        return self.forward_branches(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.forward_features(x))
