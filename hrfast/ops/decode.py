"""Heatmap decoding: argmax + quarter offset (official), DARK, UDP; and mapping back to the image.

``decode_heatmaps`` runs ``torch.ops.hrfast.decode_heatmaps`` (C++/CUDA) when the extension
serves the device, else ``decode_heatmaps_ref`` (pure PyTorch, same signature and rules).
The rules are written out in ``csrc/decode.h``.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from .._extension import HAS_EXTENSION
from ._dispatch import check_tensor, native_available

METHODS = ("quarter", "dark", "udp", "argmax")
NATIVE_METHODS = ("quarter", "dark", "udp")   # argmax is a gather: no kernel
# "argmax" is the official decoding with TEST.POST_PROCESS false: the maximum's pixel, no
# refinement. It is a gather with nothing to fuse, so it has no native kernel: both fronts run
# the reference.
MAX_BLUR_KERNEL = 31
PIXEL_STD = 200.0


def _prepare(heatmaps, method, blur_kernel):
    check_tensor(heatmaps, "heatmaps", 4, "(B, K, H, W)")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be a floating-point tensor, got {heatmaps.dtype}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("dark", "udp") and not (1 <= blur_kernel <= MAX_BLUR_KERNEL and blur_kernel % 2 == 1):
        raise ValueError(f"blur_kernel must be odd and in [1, {MAX_BLUR_KERNEL}], got {blur_kernel}")
    if heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise ValueError(f"heatmaps must have H, W >= 1, got shape {tuple(heatmaps.shape)}")
    return heatmaps.float()


def decode_heatmaps(heatmaps: torch.Tensor, method: str = "quarter", blur_kernel: int = 11
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Joint positions from heatmaps.

    Args:
        heatmaps: (B, K, H, W), any float dtype (computed in float32).
        method: ``"quarter"`` (argmax, then 0.25 px toward the higher neighbour: the official
            post-process), ``"dark"`` (Zhang et al. 2020), ``"udp"`` (Huang et al. 2020) or
            ``"argmax"`` (no refinement: the official code with TEST.POST_PROCESS false).
        blur_kernel: odd Gaussian blur size for dark/udp (11 for 64x48 maps, as published).
    Returns:
        coords (B, K, 2) float32 (x, y) in heatmap pixels, (0, 0) where the maximum is not > 0;
        maxvals (B, K) float32 (the raw maximum, NaN if the map holds a NaN).
    """
    hm = _prepare(heatmaps, method, blur_kernel)
    if hm.numel() == 0:
        return hm.new_zeros(hm.shape[0], hm.shape[1], 2), hm.new_zeros(hm.shape[:2])
    if native_available(hm) and method != "argmax":
        return torch.ops.hrfast.decode_heatmaps(hm, method, int(blur_kernel))
    return _decode_ref(hm, method, int(blur_kernel))


def decode_heatmaps_ref(heatmaps: torch.Tensor, method: str = "quarter", blur_kernel: int = 11
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch twin of :func:`decode_heatmaps` (same signature and rules)."""
    hm = _prepare(heatmaps, method, blur_kernel)
    if hm.numel() == 0:
        return hm.new_zeros(hm.shape[0], hm.shape[1], 2), hm.new_zeros(hm.shape[:2])
    return _decode_ref(hm, method, int(blur_kernel))


def _blur_kernel_1d(k: int, device) -> torch.Tensor:
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8     # OpenCV's default sigma for size k
    d = torch.arange(k, dtype=torch.float64, device=device) - k // 2
    w = torch.exp(-d * d / (2 * sigma * sigma))
    return w / w.sum()


def _gather(src: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """src (B, K, h, w) at integer pixels (yy, xx), each (B, K), as float64."""
    B, K, _, w = src.shape
    return torch.gather(src.reshape(B, K, -1), 2, (yy * w + xx)[..., None])[..., 0].double()


def _argmax_ref(hm: torch.Tensor):
    """(px, py, maxvals) of every map, with numpy's argmax rules: the first NaN if any, else
    the first maximum."""
    B, K, H, W = hm.shape
    flat = hm.reshape(B, K, H * W)
    nan = torch.isnan(flat)
    first_nan = torch.argmax(nan.to(torch.uint8), dim=-1)
    first_max = torch.argmax(torch.where(nan, torch.full_like(flat, -math.inf), flat), dim=-1)
    idx = torch.where(nan.any(-1), first_nan, first_max)
    return idx % W, idx // W, torch.gather(flat, 2, idx[..., None])[..., 0]


def _quarter_ref(hm, px, py, conf):
    """The official quarter-pixel shift toward the higher neighbour (inner pixels only)."""
    H, W = hm.shape[2:]
    x, y = px.double(), py.double()
    if W < 3 or H < 3:
        return x, y
    inner = (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1) & conf
    pxc, pyc = px.clamp(1, max(W - 2, 1)), py.clamp(1, max(H - 2, 1))
    ddx = _gather(hm, pyc, (pxc + 1).clamp(max=W - 1)) - _gather(hm, pyc, (pxc - 1).clamp(min=0))
    ddy = _gather(hm, (pyc + 1).clamp(max=H - 1), pxc) - _gather(hm, (pyc - 1).clamp(min=0), pxc)
    ddx = torch.nan_to_num(torch.sign(ddx), nan=0.0)
    ddy = torch.nan_to_num(torch.sign(ddy), nan=0.0)
    return torch.where(inner, x + 0.25 * ddx, x), torch.where(inner, y + 0.25 * ddy, y)


def _log_blurred(hm, maxvals, k: int, udp: bool):
    """log of the Gaussian-blurred maps rescaled to their original maximum, padded by 2: zeros
    (DARK) or replicated edges (UDP). (B, K, H + 4, W + 4), float64."""
    B, K, H, W = hm.shape
    w1 = _blur_kernel_1d(k, hm.device)
    r = k // 2
    m = hm.double().reshape(B * K, 1, H, W)
    m = F.conv2d(F.pad(m, (r, r, 0, 0)), w1.view(1, 1, 1, k))
    m = F.conv2d(F.pad(m, (0, 0, r, r)), w1.view(1, 1, k, 1)).reshape(B, K, H, W)
    bmax = m.amax(dim=(2, 3))
    scale = torch.where((bmax > 0) & torch.isfinite(bmax), maxvals.double() / bmax, torch.ones_like(bmax))
    lo, hi = (1e-3, 50.0) if udp else (1e-10, math.inf)
    logm = torch.log((m * scale[..., None, None]).clamp(lo, hi))
    if udp:
        return F.pad(logm.reshape(B * K, 1, H, W), (2,) * 4, mode="replicate").reshape(B, K, H + 4, W + 4)
    return F.pad(logm, (2,) * 4, value=0.0)


def _taylor_ref(hm, px, py, maxvals, conf, k: int, udp: bool):
    """DARK's (or UDP's) second-order Taylor step on the log of the blurred map."""
    H, W = hm.shape[2:]
    logp = _log_blurred(hm, maxvals, k, udp)

    def L(dy, dx):
        return _gather(logp, py + 2 + dy, px + 2 + dx)

    c = L(0, 0)
    dx = 0.5 * (L(0, 1) - L(0, -1))
    dy = 0.5 * (L(1, 0) - L(-1, 0))
    if udp:
        eps = float(torch.finfo(torch.float32).eps)
        dxx = L(0, 1) - 2 * c + L(0, -1) + eps
        dyy = L(1, 0) - 2 * c + L(-1, 0) + eps
        dxy = 0.5 * (L(1, 1) - L(0, 1) - L(1, 0) + c + c - L(0, -1) - L(-1, 0) + L(-1, -1))
        applies = conf
    else:
        dxx = 0.25 * (L(0, 2) - 2 * c + L(0, -2))
        dxy = 0.25 * (L(1, 1) - L(-1, 1) - L(1, -1) + L(-1, -1))
        dyy = 0.25 * (L(2, 0) - 2 * c + L(-2, 0))
        applies = conf & (px > 1) & (px < W - 2) & (py > 1) & (py < H - 2)
    det = dxx * dyy - dxy * dxy
    ok = applies & (det != 0) & torch.isfinite(det)
    safe = torch.where(ok, det, torch.ones_like(det))
    x, y = px.double(), py.double()
    x = torch.where(ok, x - (dyy * dx - dxy * dy) / safe, x)
    y = torch.where(ok, y - (-dxy * dx + dxx * dy) / safe, y)
    return x, y


def _decode_ref(hm: torch.Tensor, method: str, k: int):
    px, py, maxvals = _argmax_ref(hm)
    conf = maxvals > 0
    if method == "argmax":
        x, y = px.double(), py.double()
    elif method == "quarter":
        x, y = _quarter_ref(hm, px, py, conf)
    else:
        x, y = _taylor_ref(hm, px, py, maxvals, conf, k, method == "udp")
    x = torch.where(conf, x, torch.zeros_like(x))
    y = torch.where(conf, y, torch.zeros_like(y))
    return torch.stack([x, y], -1).float(), maxvals


def heatmap_to_image(coords: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                     heatmap_size: Sequence[int], udp: bool = False) -> torch.Tensor:
    """Map (B, K, 2) heatmap-pixel coords to original-image pixels through the inverse crop.

    ``center`` (B, 2) image pixels, ``scale`` (B, 2) in units of 200 px (official convention);
    ``heatmap_size`` = (W, H). The official transform (no rotation) is isotropic with factor
    scale_w * 200 / W about the map centre; UDP uses (size - 1) per axis, about pixel 0.
    """
    W, H = heatmap_size
    c = center.double()[:, None, :]
    s = scale.double()[:, None, :] * PIXEL_STD
    xy = coords.double()
    if udp:
        f = s / torch.tensor([W - 1.0, H - 1.0], dtype=torch.float64, device=coords.device)
        out = xy * f + c - s * 0.5
    else:
        f = s[..., :1] / W
        half = torch.tensor([W * 0.5, H * 0.5], dtype=torch.float64, device=coords.device)
        out = c + (xy - half) * f
    return out.float()


def final_preds(heatmaps: torch.Tensor, center, scale, method: str = "quarter",
                blur_kernel: int = 11) -> torch.Tensor:
    """Decode heatmaps and map them to original-image pixels (official ``get_final_preds``).

    Args:
        heatmaps: (B, K, H, W) float.
        center: (B, 2) person centres in original-image pixels.
        scale: (B, 2) person scales in units of 200 px (the official convention).
        method: ``quarter`` | ``dark`` | ``udp``.
    Returns:
        (B, K, 3) float32: x, y in original-image pixels and the heatmap maximum as score.
    """
    coords, maxvals = decode_heatmaps(heatmaps, method, blur_kernel)
    B = heatmaps.shape[0]
    center = torch.as_tensor(center, dtype=torch.float64, device=heatmaps.device).reshape(-1, 2)
    scale = torch.as_tensor(scale, dtype=torch.float64, device=heatmaps.device).reshape(-1, 2)
    if center.shape[0] != B or scale.shape[0] != B:
        raise ValueError(f"center and scale must be (B, 2) with B={B}, got {tuple(center.shape)} "
                         f"and {tuple(scale.shape)}")
    xy = heatmap_to_image(coords, center, scale, (heatmaps.shape[3], heatmaps.shape[2]), udp=method == "udp")
    return torch.cat([xy, maxvals[..., None]], -1)


def _register_fake() -> None:
    if not HAS_EXTENSION:
        return

    @torch.library.register_fake("hrfast::decode_heatmaps")
    def _(heatmaps, method, blur_kernel):
        # the schema the C++ kernels check, so a traced graph fails where eager would
        torch._check(heatmaps.dim() == 4, lambda: "heatmaps must be (B, K, H, W)")
        torch._check(heatmaps.is_floating_point(), lambda: "heatmaps must be floating-point")
        torch._check(method in NATIVE_METHODS, lambda: f"method must be one of {NATIVE_METHODS}")
        torch._check(method == "quarter" or blur_kernel % 2 == 1, lambda: "blur_kernel must be odd")
        B, K = heatmaps.shape[:2]
        return heatmaps.new_empty((B, K, 2)), heatmaps.new_empty((B, K))


_register_fake()
