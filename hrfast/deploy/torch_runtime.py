"""The torch runtime of :func:`hrfast.optimize`: eager modules, channels_last, the fused
exchange units on CUDA, ``torch.compile`` or CUDA graphs."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..kernels.launch import HAS_TRITON
from ..ops.conv3x3 import install_conv3x3, wgrad_pays
from ..ops.norm_act import install_norm_act
from .fold import fold_batchnorm
from .model import CudaGraphNet, OptimizedModel
from .plan import Plan, dtype_name


def frozen_inference_copy(model: nn.Module, plan: Plan) -> nn.Module:
    """An eval copy of ``model`` with BN folded and no gradients (``model`` is untouched)."""
    net = copy.deepcopy(model).eval()
    n = fold_batchnorm(net)
    plan.note(f"folded {n} BatchNorm layers into their convolutions", "one kernel per conv, no BN pass")
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def set_exchange_backend(net: nn.Module, plan: Plan) -> None:
    if not hasattr(net, "set_backend"):
        return
    if plan.device.type == "cuda" and HAS_TRITON:
        net.set_backend("triton")
        plan.note("exchange units on the fused Triton kernels",
                  "BN, upsample, sum and ReLU in one pass per output branch")
    else:
        net.set_backend("reference")
        plan.note("exchange units on the reference path",
                  "the Triton kernels need a GPU (the CPU interpreter is for tests only)")


def _compiled(net: nn.Module, plan: Plan) -> nn.Module:
    if not plan.compile:
        if plan.mode == "inference" and plan.device.type == "cuda":
            plan.note("no torch.compile; a CUDA graph per input shape",
                      "one replay instead of a launch per kernel (the fused units are launch-bound)")
            return CudaGraphNet(net)
        plan.note("no torch.compile", "compile=False")
        return net
    if plan.mode == "training":
        plan.note("torch.compile", "fuses elementwise work in forward and backward")
        return torch.compile(net)
    if plan.device.type == "cuda":
        plan.note("torch.compile(mode='max-autotune', dynamic=False)",
                  "autotuned kernels and CUDA graphs for the fixed input shape")
        return torch.compile(net, mode="max-autotune", dynamic=False)
    plan.note("torch.compile(dynamic=False, freezing=True)",
              "weights become constants: oneDNN prepacks them and fuses ReLU/add into the convs")
    return torch.compile(net, dynamic=False, options={"freezing": True})


def build(model: nn.Module, plan: Plan, **_) -> OptimizedModel:
    """Inference: a BN-folded copy in ``plan.dtype``. Training: ``model`` itself (its
    parameters are the ones trained) under autocast."""
    if plan.mode == "inference":
        net = frozen_inference_copy(model, plan)
        if plan.dtype != torch.float32:
            net = net.to(plan.dtype)
            plan.note("weights cast to " + dtype_name(plan.dtype), "no per-call autocast casts")
    else:
        net = model.train()
        if plan.dtype != torch.float32:
            plan.note(f"autocast {dtype_name(plan.dtype)}", "fp32 master weights, low-precision math")
        plan.note("the optimizer is the caller's", "hrfast.engine.optim.build_optimizer gives torch's fused "
                  "Adam/SGD step, as `hrfast train` uses (about 5x faster than the default Adam on the CPU)")
    net = net.to(device=plan.device, memory_format=torch.channels_last)
    plan.note("channels_last", "oneDNN/cuDNN convolutions run natively in NHWC")
    if plan.mode == "training" and install_norm_act(net):
        if plan.device.type == "cpu":
            plan.note("BN + residual + ReLU fused (hrfast::bn_act)", "two passes each way instead of four and three")
        else:
            plan.note("BN + residual + ReLU fused (Triton: bn_partials, bn_stats, branch_sum)",
                      "one write forward and one backward, the statistics with no host sync")
    if plan.mode == "training" and plan.device.type == "cpu" and plan.dtype == torch.bfloat16 and \
            wgrad_pays() and install_conv3x3(net):
        plan.note("3x3 weight gradients on hrfast::conv3x3_wgrad",
                  "oneDNN has no brgemm bf16 weight gradient without AMX; its direct kernel is slower")
    set_exchange_backend(net, plan)
    net = _compiled(net, plan)
    if plan.mode == "inference":
        return OptimizedModel(net, plan, model, input_dtype=plan.dtype, call_context=torch.no_grad)
    return OptimizedModel(net, plan, model, input_dtype=torch.float32, autocast=plan.dtype != torch.float32)
