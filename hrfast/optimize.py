"""``hrfast.optimize``: make a model fast on the device it will run on, keeping its outputs.

Inference: fold every BatchNorm into the convolution before it; use channels_last; run the
exchange units on the fused Triton kernels on CUDA. Pick the
dtype: bf16 on CUDA and on CPUs with native bf16 (avx512_bf16 / AMX), else fp32. Then
``torch.compile`` where it helps. Training: channels_last, AMP dtype, compile (BN stays).
Every choice is recorded in ``OptimizedModel.choices`` and printed with ``verbose=True``.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .device import cpu_has_native_bf16

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


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


class OptimizedModel(nn.Module):
    """The optimized network behind the original call signature: (B, 3, H, W) float ->
    heatmaps (B, K, h, w) float32. ``choices`` lists (what, why) pairs."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, channels_last: bool, autocast: bool,
                 device_type: str, choices: List[Tuple[str, str]], original: nn.Module):
        super().__init__()
        self.net = net
        self.dtype, self.channels_last, self.autocast = dtype, channels_last, autocast
        self.device_type = device_type
        self.choices = choices
        self.inference = not any(p.requires_grad for p in net.parameters())
        self.input_size = getattr(original, "input_size", None)
        self.heatmap_size = getattr(original, "heatmap_size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference:
            with torch.no_grad():      # frozen (compiled) weights need no autograd
                return self._run(x)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast:
            with torch.autocast(self.device_type, dtype=self.dtype):
                return self.net(x).float()
        return self.net(x.to(self.dtype)).float()

    def report(self) -> str:
        return "\n".join(f"- {what}: {why}" for what, why in self.choices)


def optimize(model: nn.Module, *, mode: str = "inference", dtype: Optional[str] = None,
             compile: bool = True, device=None, verbose: bool = False) -> OptimizedModel:
    """Return a fast version of ``model`` for ``mode`` = ``"inference"`` or ``"training"``.

    Args:
        dtype: ``None`` picks (bf16 on CUDA and native-bf16 CPUs, else fp32); or ``"fp32"``,
            ``"bf16"``, ``"fp16"``.
        compile: ``torch.compile`` the network (inference: mode ``max-autotune-no-cudagraphs`` on
            CPU, ``max-autotune`` with CUDA graphs on GPU for fixed shapes).
        device: where it will run (default: the model's device).
    Inference folds BN and leaves ``model`` untouched (it works on a copy). Training keeps BN,
    shares ``model``'s parameters (so an optimizer over ``model.parameters()`` trains it), and
    runs forward under autocast.
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    choices: List[Tuple[str, str]] = []
    if dtype is None:
        if device.type == "cuda":
            dt, why = torch.bfloat16, "CUDA: bf16 tensor cores"
        elif cpu_has_native_bf16():
            dt, why = torch.bfloat16, "CPU has native bf16 (avx512_bf16/AMX): oneDNN bf16 convolutions"
        else:
            dt, why = torch.float32, "CPU without native bf16: bf16 would be emulated and slower"
    else:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))} or None, got {dtype!r}")
        dt, why = _DTYPES[dtype], "requested"
    choices.append((f"dtype {str(dt).replace('torch.', '')}", why))

    if mode == "inference":
        net = copy.deepcopy(model).eval()
        n = fold_batchnorm(net)
        choices.append((f"folded {n} BatchNorm layers into their convolutions", "one kernel per conv, no BN pass"))
        for p in net.parameters():
            p.requires_grad_(False)
        autocast = False
        if dt != torch.float32:
            net = net.to(dt)
            choices.append(("weights cast to " + str(dt).replace("torch.", ""), "no per-call autocast casts"))
    else:
        net = model.train()
        autocast = dt != torch.float32
        if autocast:
            choices.append((f"autocast {str(dt).replace('torch.', '')}", "fp32 master weights, low-precision math"))
    net = net.to(device=device, memory_format=torch.channels_last)
    choices.append(("channels_last", "oneDNN/cuDNN convolutions run natively in NHWC"))
    if hasattr(net, "set_backend"):
        from .ops.fused_sum import HAS_TRITON
        if device.type == "cuda" and HAS_TRITON:
            net.set_backend("triton")
            choices.append(("exchange units on the fused Triton kernels",
                            "BN, upsample, sum and ReLU in one pass per output branch"))
        else:
            net.set_backend("reference")
            choices.append(("exchange units on the reference path",
                            "the Triton kernels need a GPU (the CPU interpreter is for tests only)"))
    if compile:
        if mode == "inference" and device.type == "cuda":
            net = torch.compile(net, mode="max-autotune", dynamic=False)
            choices.append(("torch.compile(mode='max-autotune', dynamic=False)",
                            "autotuned kernels and CUDA graphs for the fixed input shape"))
        elif mode == "inference":
            net = torch.compile(net, dynamic=False, options={"freezing": True})
            choices.append(("torch.compile(dynamic=False, freezing=True)",
                            "weights become constants: oneDNN prepacks them and fuses ReLU/add into the convs"))
        else:
            net = torch.compile(net)
            choices.append(("torch.compile", "fuses elementwise work in forward and backward"))
    else:
        choices.append(("no torch.compile", "compile=False"))
    out = OptimizedModel(net, dt, True, autocast, device.type, choices, model)
    if verbose:
        print(f"hrfast.optimize(mode={mode!r}) on {device}:\n{out.report()}")
    return out
