"""The HRNet family beyond pose, on the same backbone and with each official repository's keys.

- :class:`HRNetClassifier`: ImageNet classification (HRNet-Image-Classification,
  ``MODEL.NAME: cls_hrnet``). Every branch is widened by one Bottleneck (``incre_modules``),
  the branches are merged from high to low resolution by strided 3x3 convs
  (``downsamp_modules``), a 1x1 conv makes 2048 channels (``final_layer``), then global
  average pooling and ``classifier``. (B, 3, H, W) -> logits (B, 1000).
- :class:`HRNetLandmarks`: facial landmarks (HRNet-Facial-Landmark-Detection,
  ``MODEL.NAME: hrnet``), HRNetV2: every branch resized bilinearly to 1/4 and concatenated,
  then ``head`` (1x1 conv + BN + ReLU, conv to K heatmaps). (B, 3, H, W) -> (B, K, H/4, W/4).
- :class:`HRNetSegmentation`: semantic segmentation (HRNet-Semantic-Segmentation,
  ``MODEL.NAME: seg_hrnet``), HRNetV2 with ``last_layer``: logits (B, classes, H/4, W/4), at
  1/4 resolution as the official model returns them.

The face and segmentation nets resize bilinearly inside their exchange units too (the pose and
classification nets upsample by nearest); ``backend="triton"`` fuses both kinds
(``hrfast.ops.exchange``). :func:`build_model` builds any of the four from an official
experiment YAML.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, default_config, load_config, merge_config, read_yaml
from .blocks import BLOCKS, Bottleneck, batch_norm, make_blocks
from .hrnet import HRNet, HRNetBackbone

HEAD_CHANNELS = (32, 64, 128, 256)   # the classification head's Bottleneck widths per branch
MODEL_NAMES = {"pose_hrnet": "pose", "cls_hrnet": "cls", "hrnet": "face", "seg_hrnet": "seg"}
DEFAULT_STAGE1 = {"num_modules": 1, "block": "BOTTLENECK", "num_blocks": [4], "num_channels": [64]}


class HRNetClassifier(HRNetBackbone):
    """HRNet-W*-C of HRNet-Image-Classification (module doc); ``spec`` as
    :class:`~hrfast.models.hrnet.HRNetBackbone`'s plus ``num_classes`` (1000 officially)."""

    default_input_size = (224, 224)

    def __init__(self, spec: Mapping[str, Any], backend: str = "reference") -> None:
        super().__init__({**spec, "multi_scale_last": True, "upsample": "nearest"})
        widths = [c * Bottleneck.expansion for c in HEAD_CHANNELS[:len(self.out_channels)]]
        self.incre_modules = nn.ModuleList(make_blocks(Bottleneck, c, h, 1)
                                           for c, h in zip(self.out_channels, HEAD_CHANNELS))
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), batch_norm(widths[i + 1]),
                          nn.ReLU(inplace=True)) for i in range(len(widths) - 1))
        self.final_layer = nn.Sequential(nn.Conv2d(widths[-1], 2048, 1), batch_norm(2048), nn.ReLU(inplace=True))
        self.num_classes = int(spec.get("num_classes", 1000))
        self.classifier = nn.Linear(2048, self.num_classes)
        self.init_weights()
        self.set_backend(backend)

    def init_weights(self) -> None:
        """The classification repository's: convs He-normal (fan out), BN weight 1 bias 0."""
        if next(self.parameters()).is_meta:
            return      # built for its shapes only (`hrfast info`): no values to fill
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled features (B, 2048)."""
        ys = self.forward_branches(x)
        y = self.incre_modules[0](ys[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + down(y)
        return self.final_layer(y).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


class _HRNetV2(HRNetBackbone):
    """HRNetV2: all branches bilinearly at 1/4, concatenated, then a 1x1 conv + BN + ReLU and
    a conv to ``outputs`` maps, in the Sequential named ``head_name``."""

    head_name = "head"

    def __init__(self, spec: Mapping[str, Any], outputs: int, first_padding: int, backend: str) -> None:
        super().__init__({**spec, "multi_scale_last": True, "upsample": "bilinear"})
        self.align_corners = bool(spec.get("align_corners", False))
        c = sum(self.out_channels)
        k = int(spec.get("final_conv_kernel", 1))
        setattr(self, self.head_name, nn.Sequential(
            nn.Conv2d(c, c, 1, padding=first_padding), batch_norm(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, outputs, k, padding=1 if k == 3 else 0)))
        self.init_weights()
        self.set_backend(backend)

    # The head's first conv per branch at the branch's resolution (forward): 8x fewer MACs in
    # that conv for W48, but it resizes the conv's full width once per branch. Measured on
    # the 2-core CPU, eager fp32 (benchmarks/hrnetv2_head.py): 0.96x for face W18 at 256x256,
    # 1.05x for segmentation W48 at 1024x512; so off by default.
    low_res_head = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the concatenated branches (B, sum of widths, H/4, W/4)."""
        ys = self.forward_branches(x)
        return torch.cat([ys[0]] + [self._resize(y, ys[0]) for y in ys[1:]], 1)

    def _resize(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, size=like.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = getattr(self, self.head_name)
        conv = head[0]
        if not (self.low_res_head and conv.padding == (0, 0)):
            return head(self.forward_features(x))
        # conv1x1(cat_j up(y_j)) = sum_j up(conv1x1_j(y_j)) + b: a 1x1 conv and a bilinear
        # resize are both linear and act on different axes, so they commute. Each branch's
        # slice of the weight then runs at the branch's own resolution (W48: 8x fewer MACs in
        # that conv), and the concatenation is never built.
        ys = self.forward_branches(x)
        z, lo = None, 0
        for j, y in enumerate(ys):
            part = F.conv2d(y, conv.weight[:, lo:lo + y.shape[1]])
            lo += y.shape[1]
            part = part if j == 0 else self._resize(part, ys[0])
            z = part if z is None else z + part
        return head[1:](z + conv.bias.view(1, -1, 1, 1))


class HRNetLandmarks(_HRNetV2):
    """HRNetV2 of HRNet-Facial-Landmark-Detection: K landmark heatmaps at 1/4 resolution.
    Its first head conv pads by 1 when ``final_conv_kernel`` is 3 (a 1x1 conv: the maps grow
    by 2 pixels each side), as the official code does."""

    head_name = "head"
    default_input_size = (256, 256)

    def __init__(self, spec: Mapping[str, Any], backend: str = "reference") -> None:
        self.num_joints = int(spec["num_joints"])
        pad = 1 if int(spec.get("final_conv_kernel", 1)) == 3 else 0
        super().__init__({**spec, "align_corners": False}, self.num_joints, pad, backend)


class HRNetSegmentation(_HRNetV2):
    """HRNetV2 of HRNet-Semantic-Segmentation: class logits at 1/4 resolution."""

    head_name = "last_layer"
    default_input_size = (1024, 512)   # the Cityscapes training crop, (width, height)

    def __init__(self, spec: Mapping[str, Any], backend: str = "reference") -> None:
        self.num_classes = int(spec.get("num_classes", 19))
        super().__init__(spec, self.num_classes, 0, backend)


def _stage(raw: Any, where: str) -> Dict[str, Any]:
    """One STAGEn mapping of an official YAML, checked."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of NUM_MODULES, BLOCK, NUM_BLOCKS, NUM_CHANNELS")
    try:
        st = {"num_modules": int(raw["NUM_MODULES"]), "block": str(raw["BLOCK"]),
              "num_blocks": [int(v) for v in raw["NUM_BLOCKS"]], "num_channels": [int(v) for v in raw["NUM_CHANNELS"]]}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where} needs NUM_MODULES, BLOCK, NUM_BLOCKS and NUM_CHANNELS ({e})") from None
    if st["block"] not in BLOCKS:
        raise ConfigError(f"{where}.BLOCK must be one of {sorted(BLOCKS)}, got {st['block']!r}")
    n = int(raw.get("NUM_BRANCHES", len(st["num_channels"])))
    if not (n == len(st["num_blocks"]) == len(st["num_channels"])) or st["num_modules"] < 1:
        raise ConfigError(f"{where}: NUM_BRANCHES, NUM_BLOCKS and NUM_CHANNELS must agree, and NUM_MODULES be >= 1")
    return st


def family_spec(raw: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(task, model spec) of an official experiment YAML's contents of the classification,
    face or segmentation repository. task: 'cls', 'face' or 'seg'."""
    model = raw.get("MODEL") if isinstance(raw, Mapping) else None
    name = model.get("NAME") if isinstance(model, Mapping) else None
    if name not in MODEL_NAMES or name == "pose_hrnet":
        raise ConfigError(f"MODEL.NAME must be one of cls_hrnet, hrnet (faces), seg_hrnet, got {name!r}")
    extra = model.get("EXTRA") or {}
    task = MODEL_NAMES[name]
    # the face net's layer1 is fixed (it reads no STAGE1); the others read it when given
    given = "STAGE1" in extra and task != "face"
    stage1 = _stage(extra["STAGE1"], "MODEL.EXTRA.STAGE1") if given else dict(DEFAULT_STAGE1)
    spec: Dict[str, Any] = {"stem_channels": 64, "stage1": stage1,
                            "stages": [_stage(extra.get(f"STAGE{i}"), f"MODEL.EXTRA.STAGE{i}") for i in (2, 3, 4)],
                            "final_conv_kernel": int(extra.get("FINAL_CONV_KERNEL", 1))}
    if task == "cls":
        spec["num_classes"] = int(model.get("NUM_CLASSES", 1000))
    elif task == "face":
        spec["num_joints"] = int(model.get("NUM_JOINTS", 98))
    elif task == "seg":
        spec["num_classes"] = int((raw.get("DATASET") or {}).get("NUM_CLASSES", 19))
        spec["align_corners"] = bool(model.get("ALIGN_CORNERS", False))
    size = (raw.get("TRAIN") or {}).get("IMAGE_SIZE") if task == "seg" else model.get("IMAGE_SIZE")
    if size:
        spec["image_size"] = tuple(int(v) for v in size)   # (width, height) in every repository
    return task, spec


FAMILY = {"cls": HRNetClassifier, "face": HRNetLandmarks, "seg": HRNetSegmentation}
FAMILY_DIR = Path(__file__).resolve().parent.parent / "configs" / "family"


def family_configs() -> list:
    """Names of the built-in classification, face and segmentation configs."""
    return sorted(p.stem for p in FAMILY_DIR.glob("*.yaml"))


def build_model(config: Union[str, Path, Mapping[str, Any]], backend: str = "reference") -> nn.Module:
    """The network an official experiment YAML describes, with its repository's state_dict
    keys: ``pose_hrnet`` -> :class:`~hrfast.models.hrnet.HRNet`, ``cls_hrnet`` ->
    :class:`HRNetClassifier`, ``hrnet`` (faces) -> :class:`HRNetLandmarks`, ``seg_hrnet`` ->
    :class:`HRNetSegmentation`. ``config``: a YAML path, its parsed contents, or a built-in
    name (a pose config, or one of :func:`family_configs`)."""
    raw = config
    if isinstance(config, str) and config in family_configs():
        config = FAMILY_DIR / f"{config}.yaml"
    if isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix not in (".yaml", ".yml"):
            return HRNet.from_config(str(config), backend=backend)
        raw = read_yaml(path)
        if _model_name(raw) == "pose_hrnet":
            return HRNet.from_config(load_config(path), backend=backend)
    if _model_name(raw) == "pose_hrnet":
        return HRNet.from_config(merge_config(default_config(), raw), backend=backend)
    task, spec = family_spec(raw)
    return FAMILY[task](spec, backend=backend)


def _model_name(raw: Any) -> Any:
    model = raw.get("MODEL") if isinstance(raw, Mapping) else None
    return model.get("NAME", "pose_hrnet") if isinstance(model, Mapping) else "pose_hrnet"
