"""Model cost: parameter count and multiply-accumulates, counted with forward hooks."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Tuple[int, int]) -> Dict[str, float]:
    """Multiply-accumulates of one forward pass on a (1, 3, H, W) input, ``input_size`` = (W, H).

    Convolutions and linear layers are counted (BN, ReLU, sums and upsampling are not), which is
    the convention behind the "GFLOPs" of the HRNet paper's tables (they are GMACs).
    Returns ``{"macs": ..., "flops": 2 * macs}``.
    """
    total = [0]

    def conv_hook(m: nn.Conv2d, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * k

    def linear_hook(m: nn.Linear, inp, out):
        total[0] += out.numel() * m.in_features

    hooks, norms = [], []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and "forward" not in vars(m):
            # counted as nothing and shape-preserving, so skipped: on the meta device (`hrfast
            # info`) each BN runs torch's Python decomposition, half of the count's time
            m.forward = _identity
            norms.append(m)
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, 3, input_size[1], input_size[0], device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
        for m in norms:
            del m.forward
    return {"macs": float(total[0]), "flops": 2.0 * total[0]}
