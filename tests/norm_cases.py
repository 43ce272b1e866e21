"""Shared cases of the two fused BN + residual + ReLU paths (tests/test_bn_act.py, the native
CPU op; tests/test_norm_act.py, the Triton ops): a BatchNorm with non-trivial parameters and
statistics, inputs whose pre-ReLU values keep away from 0, one forward + backward, and the
running statistics over three steps against nn.BatchNorm2d's.

Inputs keep |x - mean| >= about 0.5 std and the residual small, so that no pre-ReLU value sits
near 0: a rounding difference there flips the ReLU mask, which changes a gradient by a whole
element and says nothing about the kernels.
"""
import copy

import torch
from torch import nn

CL = torch.channels_last


def make_bn(c: int, momentum=0.1, device="cpu", dtype=torch.float32) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.1)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    return bn.to(device, dtype)


def make_inputs(shape, dtype, residual: bool, device="cpu", fmt=CL):
    """(x, residual or None, the output's gradient), seeded by the shape."""
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    x = torch.randn(shape, generator=g)
    x = (x.sign() * (x.abs() + 0.5) * 2 + 1).to(device, dtype).contiguous(memory_format=fmt)
    r = (torch.randn(shape, generator=g) * 0.01).to(device, dtype).contiguous(memory_format=fmt) if residual else None
    return x, r, torch.randn(shape, generator=g).to(device, dtype)


def run_norm(fn, bn, x, r, dy, relu):
    """[y, dx, dweight, dbias] (+ [dresidual]) of ``fn(x, bn, r, relu)`` backpropagating dy."""
    x = x.detach().requires_grad_()
    r = r.detach().requires_grad_() if r is not None else None
    bn.zero_grad()
    y = fn(x, bn, r, relu)
    y.backward(dy)
    return [y, x.grad, bn.weight.grad, bn.bias.grad] + ([r.grad] if r is not None else [])


def float64_reference(bn, x, r, dy, relu):
    """:func:`run_norm` of the eager twin in float64 on copies: what both fused forms are held to."""
    from hrfast.ops.bn_act import bn_act_ref
    return run_norm(bn_act_ref, copy.deepcopy(bn).double(), x.double(), None if r is None else r.double(),
                    dy.double(), relu)


def assert_running_statistics(fn, ref_fn, momentum, device="cpu"):
    """Running mean and (unbiased) variance and num_batches_tracked of ``fn`` as ``ref_fn``
    (eager) updates them, over three steps of different sizes (momentum None: the cumulative
    average)."""
    bn = make_bn(6, momentum, device)
    ref = copy.deepcopy(bn)
    for step in range(3):
        x, _, _ = make_inputs((2, 6, 5, 4 + step), torch.float32, False, device)
        fn(x, bn)
        ref_fn(x, ref)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name), rtol=1e-6, atol=1e-6)


def block_step_outputs(nets, x):
    """For each net: [y, dx, every parameter's gradient, every buffer] after one forward and
    ``y.square().sum()`` backward on a fresh copy of x (the block-under-compile tests)."""
    outs = []
    for net in nets:
        xi = x.clone().requires_grad_()
        y = net(xi)
        y.square().sum().backward()
        outs.append([y, xi.grad] + [p.grad for p in net.parameters()] + list(net.buffers()))
    return outs
