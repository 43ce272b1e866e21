"""HRNet model definitions."""
from .blocks import BasicBlock, Bottleneck
from .exchange import ExchangeUnit
from .hrnet import HighResolutionModule, HRNet

__all__ = ["HRNet", "HighResolutionModule", "ExchangeUnit", "BasicBlock", "Bottleneck"]
