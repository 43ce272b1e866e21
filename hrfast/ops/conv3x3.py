"""A 3x3 convolution (stride 1, padding 1) whose weight gradient is hrfast's own in bf16 on CPUs
with AVX512-BF16 and no AMX.

On such a CPU oneDNN runs the bf16 forward and input gradient of HRNet's 3x3 convolutions on
its brgemm kernels at the bf16 peak, but the weight gradient on its older direct kernel
(``jit_bf16``; its brgemm weight gradient is registered for AMX only) at 60-80% of it: 41% of
oneDNN's time in a W32 training step (``benchmarks/RESULTS.md``, "training").
``hrfast::conv3x3_wgrad`` (``csrc/conv3x3.cpp``) is that GEMM on ``vdpbf16ps``, register-blocked,
with the operands packed as pixel pairs. ``hrfast::conv3x3`` is ATen's forward with a C++
autograd whose backward takes the input gradient from ATen and the weight gradient from it.

- :func:`conv3x3_wgrad_ref` is the twin: ATen's weight gradient, the same signature.
- :class:`Conv3x3` is an ``nn.Conv2d`` that calls the op under CPU bf16 autocast (else it is
  ``nn.Conv2d``); :func:`install_conv3x3` switches a model's eligible convolutions to it (the
  state_dict and every other behaviour unchanged), and ``hrfast.optimize(mode="training")``
  does so where :func:`wgrad_pays` holds.

Shapes: x (N, C, H, W), weight (O, C, 3, 3), grad (N, O, H, W); channels_last bfloat16 for the
native kernel (any layout is made channels_last first).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._extension import HAS_EXTENSION
from ..device import cpu_flags

# an extension built before this op existed serves the other ops but not this one
HAS_OP = HAS_EXTENSION and hasattr(torch.ops.hrfast, "conv3x3_wgrad")


def conv3x3_wgrad_ref(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eager twin of :func:`conv3x3_wgrad`: ATen's weight gradient (oneDNN on the CPU)."""
    w = x.new_empty(grad.shape[1], x.shape[1], 3, 3)
    return torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


def conv3x3_wgrad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient (O, C, 3, 3) of ``conv2d(x, w, padding=1)`` for the output gradient
    ``grad``: the native kernel for bf16 CPU tensors on an AVX512-BF16 CPU, else the twin."""
    if HAS_OP and grad.dtype == x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return torch.ops.hrfast.conv3x3_wgrad(grad, x)
    return conv3x3_wgrad_ref(grad, x)


def wgrad_pays() -> bool:
    """Whether :class:`Conv3x3` is worth installing here: the kernel runs natively (a CPU with
    AVX512-BF16) and the CPU has no AMX, where oneDNN's own brgemm weight gradient runs."""
    return HAS_OP and bool(torch.ops.hrfast.conv3x3_wgrad_native()) and "amx_bf16" not in cpu_flags()


def eligible(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` (or :class:`Conv3x3`) that :class:`Conv3x3` computes: 3x3, stride 1,
    padding 1 (zeros), no dilation, groups or bias."""
    return (type(conv) in (nn.Conv2d, Conv3x3) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
            and conv.padding_mode == "zeros")


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d`` that runs ``hrfast::conv3x3`` under CPU bf16 autocast (the weight gradient
    from :func:`conv3x3_wgrad`), and ``nn.Conv2d``'s own forward otherwise."""

    def _conv_forward(self, x, weight, bias):
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and \
                torch.get_autocast_dtype("cpu") == torch.bfloat16 and bias is None:
            return torch.ops.hrfast.conv3x3(x.to(torch.bfloat16), weight.to(torch.bfloat16))
        return super()._conv_forward(x, weight, bias)


def install_conv3x3(model: nn.Module, enabled: bool = True) -> int:
    """Switch every :func:`eligible` convolution of ``model`` to :class:`Conv3x3` (or back to
    ``nn.Conv2d`` with ``enabled=False``); the parameters and buffers stay as they are.
    Returns how many are :class:`Conv3x3` now."""
    if enabled and not HAS_OP:
        return 0
    convs = [m for m in model.modules() if eligible(m)]
    for m in convs:
        m.__class__ = Conv3x3 if enabled else nn.Conv2d
    return len(convs) if enabled else 0


def _register() -> None:
    """Fakes for the two kernels (the autograd of ``hrfast::conv3x3`` is C++'s)."""
    if not HAS_OP:
        return

    @torch.library.register_fake("hrfast::conv3x3")
    def _(x, weight):
        torch._check(x.dim() == 4 and weight.dim() == 4 and tuple(weight.shape[1:]) == (x.shape[1], 3, 3),
                     lambda: "weight must be (O, C, 3, 3) over x's (N, C, H, W)")
        return F.conv2d(x, weight, padding=1)

    @torch.library.register_fake("hrfast::conv3x3_wgrad")
    def _(grad, x):
        torch._check(grad.dim() == 4 and x.dim() == 4 and grad.shape[0] == x.shape[0]
                     and grad.shape[2:] == x.shape[2:], lambda: "grad must be (N, O, H, W) over x's (N, C, H, W)")
        return x.new_empty(grad.shape[1], x.shape[1], 3, 3).contiguous(memory_format=torch.channels_last)


_register()
