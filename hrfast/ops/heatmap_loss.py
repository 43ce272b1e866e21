"""The heatmap MSE loss of SimpleBaseline/HRNet computed straight from the joints.

The official loss compares each predicted heatmap with a Gaussian target map:
``0.5 * mean((pred * w - target * w) ** 2)`` per joint. ``joints_mse_loss`` gives the same
per-joint numbers without ever storing a target: the native kernel
(``torch.ops.hrfast.joints_mse``) reads each prediction once, sums its squares, and corrects the
sum inside the Gaussian's window; the backward writes ``w^2 (pred - target) / (H W)``. At
COCO-WholeBody's 133 joints a batch of 32 targets at 64x48 is 52 MB, and the official loss
makes four tensors of that size in the forward alone (fresh allocations of that size fault in
every page), so the loss becomes a share of the step worth removing.

``joints_mse_loss_ref`` (pure PyTorch, same signature) is the official computation on the
targets of :func:`hrfast.ops.targets.gaussian_targets_ref`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._extension import HAS_EXTENSION
from ._dispatch import check_tensor, native_available
from .targets import ENCODINGS, _prepare, _targets_ref, msra_window

# an extension built before this op existed serves the other ops but not this one
HAS_OP = HAS_EXTENSION and hasattr(torch.ops.hrfast, "joints_mse")


def _check_pred(pred: torch.Tensor, joints: torch.Tensor) -> None:
    check_tensor(pred, "pred", 4, "(B, K, H, W) heatmaps")
    if tuple(pred.shape[:2]) != tuple(joints.shape[:2]):
        raise ValueError(f"pred (B, K, H, W) and joints (B, K, 2) must agree on B and K, got "
                         f"{tuple(pred.shape)} and {tuple(joints.shape)}")


def _scale(joint_weights, joints: torch.Tensor) -> torch.Tensor:
    if joint_weights is None:
        return joints.new_ones(joints.shape[:2])
    return joint_weights.expand(joints.shape[:2]).contiguous()


def joints_mse_loss(pred: torch.Tensor, joints: torch.Tensor, visible: torch.Tensor, image_size: Sequence[int],
                    sigma: float = 2.0, encoding: str = "msra", joint_weights: Optional[torch.Tensor] = None,
                    use_target_weight: bool = True) -> torch.Tensor:
    """Per-joint heatmap MSE against the Gaussian targets of ``joints``, never materialised.

    Args:
        pred: (B, K, H, W) predicted heatmaps (any float dtype; computed in float32).
        joints, visible, image_size, sigma, encoding, joint_weights: as
            :func:`hrfast.ops.targets.gaussian_targets`, whose heatmap size is pred's (W, H).
        use_target_weight: scale both maps of a joint by its target weight (the official
            ``LOSS.USE_TARGET_WEIGHT``).
    Returns:
        (B, K) float32: 0.5 * mean over the pixels of ((pred - target) * w)^2, differentiable in
        ``pred``. Its mean is the official JointsMSELoss.
    """
    _check_pred(pred, joints)
    heatmap_size = (pred.shape[3], pred.shape[2])
    joints, visible, image_size, _, sigma, jw = _prepare(
        joints, visible, image_size, heatmap_size, sigma, encoding, joint_weights)
    pred = pred.float()
    if not (HAS_OP and native_available(pred)):
        return _loss_ref(pred, joints, visible, image_size, sigma, encoding, jw, use_target_weight)
    window = msra_window(sigma, pred.device) if encoding == "msra" else pred.new_empty(0)
    loss, _ = torch.ops.hrfast.joints_mse(pred.contiguous(), joints, visible, _scale(jw, joints), list(image_size),
                                          sigma, encoding, window, bool(use_target_weight))
    return loss


def joints_mse_loss_ref(pred: torch.Tensor, joints: torch.Tensor, visible: torch.Tensor, image_size: Sequence[int],
                        sigma: float = 2.0, encoding: str = "msra", joint_weights: Optional[torch.Tensor] = None,
                        use_target_weight: bool = True) -> torch.Tensor:
    """Pure-PyTorch twin of :func:`joints_mse_loss`: the official loss on materialised targets."""
    _check_pred(pred, joints)
    heatmap_size = (pred.shape[3], pred.shape[2])
    joints, visible, image_size, _, sigma, jw = _prepare(
        joints, visible, image_size, heatmap_size, sigma, encoding, joint_weights)
    return _loss_ref(pred.float(), joints, visible, image_size, sigma, encoding, jw, use_target_weight)


def _loss_ref(pred, joints, visible, image_size, sigma, encoding, jw, use_target_weight):
    target, weight = _targets_ref(joints, visible, image_size, (pred.shape[3], pred.shape[2]), sigma, encoding)
    if jw is not None:
        weight = weight * jw
    if use_target_weight:
        w = weight[..., None, None]
        pred, target = pred * w, target * w
    return 0.5 * (pred - target).pow(2).flatten(2).mean(-1)


def _register() -> None:
    """Fakes for both kernels and the autograd of the forward (the backward is its own op)."""
    if not HAS_OP:
        return

    @torch.library.register_fake("hrfast::joints_mse")
    def _(pred, joints, visible, scale, image_size, sigma, encoding, window, use_target_weight):
        torch._check(pred.dim() == 4 and pred.dtype == torch.float32, lambda: "pred must be (B, K, H, W) float32")
        torch._check(joints.dim() == 3 and joints.shape[2] == 2 and joints.shape[:2] == pred.shape[:2],
                     lambda: "joints must be (B, K, 2) like pred")
        torch._check(visible.shape == pred.shape[:2] and scale.shape == pred.shape[:2],
                     lambda: "visible and scale must be (B, K)")
        torch._check(encoding in ENCODINGS, lambda: f"encoding must be one of {ENCODINGS}")
        return pred.new_empty(pred.shape[:2]), pred.new_empty(pred.shape[:2])

    @torch.library.register_fake("hrfast::joints_mse_backward")
    def _(grad, pred, joints, visible, weight, image_size, sigma, encoding, window):
        torch._check(grad.shape == pred.shape[:2] and weight.shape == pred.shape[:2],
                     lambda: "grad and weight must be (B, K) like pred")
        return torch.empty_like(pred)

    def setup_context(ctx, inputs, output):
        pred, joints, visible, _, image_size, sigma, encoding, window, _ = inputs
        ctx.save_for_backward(pred, joints, visible, output[1], window)
        ctx.geometry = (list(image_size), sigma, encoding)

    def backward(ctx, grad_loss, _grad_weight):
        pred, joints, visible, weight, window = ctx.saved_tensors
        image_size, sigma, encoding = ctx.geometry
        grad = torch.ops.hrfast.joints_mse_backward(grad_loss.contiguous(), pred, joints, visible, weight,
                                                    image_size, sigma, encoding, window)
        return grad, None, None, None, None, None, None, None, None

    torch.library.register_autograd("hrfast::joints_mse", backward, setup_context=setup_context)


_register()
