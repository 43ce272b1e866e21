"""HRNet model definitions."""
from .blocks import BasicBlock, Bottleneck
from .exchange import ExchangeUnit
from .hrnet import HRNet, HighResolutionModule

__all__ = ["HRNet", "HighResolutionModule", "ExchangeUnit", "BasicBlock", "Bottleneck"]
