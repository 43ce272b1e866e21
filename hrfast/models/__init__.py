"""HRNet model definitions: the backbone, the pose net and the rest of the family."""
from .blocks import BasicBlock, Bottleneck
from .exchange import ExchangeUnit
from .family import HRNetClassifier, HRNetLandmarks, HRNetSegmentation, build_model, family_configs
from .hrnet import HighResolutionModule, HRNet, HRNetBackbone

__all__ = ["HRNet", "HRNetBackbone", "HRNetClassifier", "HRNetLandmarks", "HRNetSegmentation", "build_model",
           "family_configs", "HighResolutionModule", "ExchangeUnit", "BasicBlock", "Bottleneck"]
