"""BatchNorm folding: an eval-mode BN after a conv becomes the conv's weight scale and bias."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d that feeds it, in place; the BN becomes
    ``nn.Identity``. Two patterns cover HRNet: siblings ``convN`` / ``bnN`` (blocks, stem) and
    consecutive ``Conv2d, BatchNorm2d`` inside an ``nn.Sequential`` (transitions, exchange units,
    downsample). Returns the number of folded pairs. The model must be in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BN folding uses running statistics)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (_, a), (bn_name, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    _fold_into(a, b)
                    module._modules[bn_name] = nn.Identity()
                    folded += 1
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = module._modules.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    _fold_into(conv, child)
                    module._modules[name] = nn.Identity()
                    folded += 1
    return folded


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    fused = fuse_conv_bn_eval(conv, bn)
    conv.weight = fused.weight
    conv.bias = fused.bias
