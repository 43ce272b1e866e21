"""Gaussian heatmap targets (SimpleBaseline "msra" and UDP encodings), batched.

``gaussian_targets`` runs the C++/CUDA kernel (``torch.ops.hrfast.gaussian_targets``) when the
extension serves the input's device, else ``gaussian_targets_ref`` (pure PyTorch, same signature).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .._extension import HAS_EXTENSION
from ._dispatch import check_tensor, native_available, size_pair

ENCODINGS = ("msra", "udp")


# Windows by sigma, the most recent few: a sigma sweep must not hold every window it made
# (five large sigmas once held 350 MB).
_WINDOWS: "OrderedDict[float, torch.Tensor]" = OrderedDict()
_MAX_WINDOWS = 8


def _numpy_msra_window(sigma: float) -> torch.Tensor:
    # The official float32 arithmetic: np.float32 grid, centre size // 2, np.exp in float32.
    # numpy's float32 exp is a SIMD approximation that differs from a correctly rounded exp by
    # an ulp on some values, so the window is made here, once per sigma, by numpy itself, and
    # the kernels paste it: bit-identical to the published algorithm on any machine.
    size = 2 * sigma * 3 + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    c = size // 2
    g = np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma ** 2))
    return torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32))


def constant_under_compile(fn):
    """``torch.compiler.assume_constant_result(fn)`` without importing Dynamo, which would add
    a second to every ``import hrfast`` (the CLI's --help included): the public decorator only
    sets this attribute, which Dynamo reads when it traces a call of ``fn``
    (tests/test_targets.py checks that the public decorator still sets exactly this)."""
    fn._dynamo_marked_constant = True
    return fn


# Under torch.compile this runs eagerly and its result is a constant: traced, numpy's exp would
# become torch's exp and lose bit-identity.
@constant_under_compile
def _msra_window_cpu(sigma: float) -> torch.Tensor:
    if sigma not in _WINDOWS:
        _WINDOWS[sigma] = _numpy_msra_window(sigma)
        while len(_WINDOWS) > _MAX_WINDOWS:
            _WINDOWS.popitem(last=False)
    _WINDOWS.move_to_end(sigma)
    return _WINDOWS[sigma]


def msra_window(sigma: float, device=None) -> torch.Tensor:
    """The (S, S) float32 msra Gaussian, S = len(arange(0, 6 sigma + 1)), peak 1 at the centre."""
    return _msra_window_cpu(float(sigma)).to(device or "cpu")


def _prepare(joints, visible, image_size, heatmap_size, sigma, encoding, joint_weights):
    check_tensor(joints, "joints", 3, "(B, K, 2) in input-image pixels")
    if joints.shape[-1] != 2:
        raise ValueError(f"joints must be (B, K, 2) in input-image pixels, got shape {tuple(joints.shape)}")
    check_tensor(visible, "visible", 2, "(B, K)")
    if tuple(visible.shape) != tuple(joints.shape[:2]):
        raise ValueError(f"visible must be (B, K) = {tuple(joints.shape[:2])}, got {tuple(visible.shape)}")
    if visible.device != joints.device:
        raise ValueError(f"visible must be on {joints.device} like joints, got {visible.device}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    image_size = size_pair(image_size, "image_size")
    heatmap_size = size_pair(heatmap_size, "heatmap_size")
    if min(heatmap_size) < 2 or min(image_size) < 2:
        raise ValueError(f"image_size and heatmap_size must be at least 2 pixels, got {image_size}, {heatmap_size}")
    if joint_weights is not None:
        joint_weights = torch.as_tensor(joint_weights, dtype=torch.float32, device=joints.device)
        if joint_weights.shape not in ((joints.shape[1],), tuple(joints.shape[:2])):
            raise ValueError(f"joint_weights must be (K,) or (B, K) with K={joints.shape[1]}, "
                             f"got {tuple(joint_weights.shape)}")
    return (joints.float(), visible.float(), image_size, heatmap_size, float(sigma), joint_weights)


def gaussian_targets(joints: torch.Tensor, visible: torch.Tensor, image_size: Sequence[int],
                     heatmap_size: Sequence[int], sigma: float = 2.0, encoding: str = "msra",
                     joint_weights: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Heatmap targets for a batch of people.

    Args:
        joints: (B, K, 2) joint positions in input-image pixels (x, y).
        visible: (B, K) visibility, 0/1 or bool; joints with visible <= 0.5 get an empty map.
        image_size: (width, height) of the input image, pixels.
        heatmap_size: (width, height) of the heatmaps, pixels.
        sigma: Gaussian standard deviation in heatmap pixels.
        encoding: ``"msra"`` (official: rounded centre, (6 sigma + 1)-square window) or ``"udp"``
            (Huang et al. 2020: sub-pixel centre, stride (image-1)/(heatmap-1), whole map).
        joint_weights: optional (K,) or (B, K) multipliers of target_weight (official
            ``joints_weight``).
    Returns:
        targets (B, K, H, W) float32 and target_weight (B, K) float32 (0 for invisible joints and
        joints whose window misses the heatmap).
    """
    joints, visible, image_size, heatmap_size, sigma, jw = _prepare(
        joints, visible, image_size, heatmap_size, sigma, encoding, joint_weights)
    if native_available(joints):
        window = msra_window(sigma, joints.device) if encoding == "msra" else joints.new_empty(0)
        targets, weight = torch.ops.hrfast.gaussian_targets(
            joints, visible, list(image_size), list(heatmap_size), sigma, encoding, window)
    else:
        targets, weight = _targets_ref(joints, visible, image_size, heatmap_size, sigma, encoding)
    return targets, weight if jw is None else weight * jw


def gaussian_targets_ref(joints: torch.Tensor, visible: torch.Tensor, image_size: Sequence[int],
                         heatmap_size: Sequence[int], sigma: float = 2.0, encoding: str = "msra",
                         joint_weights: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch twin of :func:`gaussian_targets` (same signature, same numbers)."""
    joints, visible, image_size, heatmap_size, sigma, jw = _prepare(
        joints, visible, image_size, heatmap_size, sigma, encoding, joint_weights)
    targets, weight = _targets_ref(joints, visible, image_size, heatmap_size, sigma, encoding)
    return targets, weight if jw is None else weight * jw


def _targets_ref(joints, visible, image_size, heatmap_size, sigma, encoding):
    W, H = heatmap_size
    dev = joints.device
    j = joints.double()
    if encoding == "msra":
        stride = torch.tensor([image_size[0] / W, image_size[1] / H], dtype=torch.float64, device=dev)
    else:
        stride = torch.tensor([(image_size[0] - 1.0) / (W - 1.0), (image_size[1] - 1.0) / (H - 1.0)],
                              dtype=torch.float64, device=dev)
    tmp = sigma * 3.0
    centre = torch.trunc(j / stride + 0.5)          # Python int(): truncation toward zero
    ul = torch.trunc(centre - tmp)
    br = torch.trunc(centre + tmp + 1)
    # a NaN or inf joint is no place: weight 0, as the native op
    outside = (ul[..., 0] >= W) | (ul[..., 1] >= H) | (br[..., 0] < 0) | (br[..., 1] < 0) | ~torch.isfinite(j).all(-1)
    weight = torch.where(outside, torch.zeros_like(visible), visible)
    paste = (~outside) & (visible > 0.5)
    xs = torch.arange(W, device=dev, dtype=torch.float64)
    ys = torch.arange(H, device=dev, dtype=torch.float64)
    if encoding == "msra":
        window = msra_window(sigma, dev)
        S = window.shape[0]
        gx = (xs.view(1, 1, 1, W) - ul[..., 0, None, None]).long()   # (B, K, 1, W) window column
        gy = (ys.view(1, 1, H, 1) - ul[..., 1, None, None]).long()   # (B, K, H, 1) window row
        inside = ((gx >= 0) & (gx < S) & (xs.view(1, 1, 1, W) < br[..., 0, None, None])
                  & (gy >= 0) & (gy < S) & (ys.view(1, 1, H, 1) < br[..., 1, None, None]))
        val = window[gy.clamp(0, S - 1), gx.clamp(0, S - 1)]
        val = torch.where(inside, val, torch.zeros_like(val))
    else:
        mu = j / stride
        dx = xs.view(1, 1, 1, W) - mu[..., 0, None, None]
        dy = ys.view(1, 1, H, 1) - mu[..., 1, None, None]
        val = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).float()
    targets = torch.where(paste[..., None, None], val, torch.zeros_like(val))
    return targets.contiguous(), weight


def _register_fake() -> None:
    if not HAS_EXTENSION:
        return

    @torch.library.register_fake("hrfast::gaussian_targets")
    def _(joints, visible, image_size, heatmap_size, sigma, encoding, window):
        # the schema the C++ kernels check, so a traced graph fails where eager would
        torch._check(joints.dim() == 3 and joints.shape[2] == 2, lambda: "joints must be (B, K, 2)")
        torch._check(joints.dtype == torch.float32, lambda: "joints must be float32")
        torch._check(visible.shape == joints.shape[:2], lambda: "visible must be (B, K) like joints")
        torch._check(len(image_size) == 2 and len(heatmap_size) == 2,
                     lambda: "image_size and heatmap_size must be (width, height)")
        torch._check(encoding in ENCODINGS, lambda: f"encoding must be one of {ENCODINGS}")
        B, K = joints.shape[:2]
        return (joints.new_empty((B, K, heatmap_size[1], heatmap_size[0])), joints.new_empty((B, K)))


_register_fake()
