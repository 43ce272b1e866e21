"""The pixel conventions of HRNet-Facial-Landmark-Detection, for NME parity with its checkpoints.

The face repository does not crop with a sub-pixel affine warp as the pose code does. Written
here from the formulas its transforms and evaluation use (1-based pixels, ``h = 200 * scale``,
output ``(R_h, R_w)``):

- **Transform.** ``x' = R_w / h * x + R_w * (0.5 - c_x / h)``, ``y'`` likewise with ``R_h``, then
  a rotation by ``-rot`` degrees about the output centre. A point goes through it as
  ``trunc(T (p - 1)) + 1``: whole pixels, truncated toward zero.
- **Crop.** A face much larger than the output first shrinks the whole image by the integer-free
  factor ``sf = 200 * scale / R_h`` (when ``sf >= 2``). The box between the two corners' whole
  pixels is cut out (zero outside the image), rotated with its padding, and resized to the
  output. Each resize goes through an 8-bit image made by **byte-scaling**: the float array's
  own minimum and maximum are stretched to 0 and 255 (SciPy's old ``imresize`` /
  ``imrotate``). Resizing and rotating are Pillow's bilinear filters.
- **Decoding.** The 1-based argmax of each heatmap (0 where the maximum is not positive), moved
  0.25 px towards the larger neighbour on each axis away from the border, then +0.5, then back
  through the inverse transform in whole pixels as above.

Here these are numpy functions; the model and everything else are hrfast's.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image


def face_transform(center, scale: float, size: Sequence[int], rot: float = 0.0) -> np.ndarray:
    """3x3 matrix from image pixels to output pixels of a crop of ``size`` (R_h, R_w) around
    ``center`` (x, y), ``200 * scale`` image pixels high, rotated by ``rot`` degrees."""
    h = 200.0 * scale
    t = np.array([[size[1] / h, 0.0, size[1] * (0.5 - center[0] / h)],
                  [0.0, size[0] / h, size[0] * (0.5 - center[1] / h)],
                  [0.0, 0.0, 1.0]])
    if rot:
        a = math.radians(-rot)
        about = np.array([[1.0, 0.0, -size[1] / 2], [0.0, 1.0, -size[0] / 2], [0.0, 0.0, 1.0]])
        turn = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        t = np.linalg.inv(about) @ turn @ about @ t
    return t


def transform_pixel(pt, center, scale: float, size: Sequence[int], invert: bool = False,
                    rot: float = 0.0) -> np.ndarray:
    """One 1-based point through :func:`face_transform` (or its inverse), in whole pixels:
    ``trunc(T (pt - 1)) + 1`` as int64 (2,)."""
    t = face_transform(center, scale, size, rot)
    if invert:
        t = np.linalg.inv(t)
    q = t @ np.array([pt[0] - 1.0, pt[1] - 1.0, 1.0])
    return q[:2].astype(np.int64) + 1


def bytescale(data: np.ndarray) -> np.ndarray:
    """uint8 data unchanged; anything else stretched from its own (min, max) to (0, 255) and
    rounded half up, over all channels together."""
    if data.dtype == np.uint8:
        return data
    lo, hi = float(data.min()), float(data.max())
    span = hi - lo if hi > lo else 1.0
    return (np.clip((data - lo) * (255.0 / span), 0, 255) + 0.5).astype(np.uint8)


def byte_resize(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`bytescale`, then Pillow's bilinear resize to (height, width): uint8."""
    return np.asarray(Image.fromarray(bytescale(data)).resize((int(width), int(height)), Image.BILINEAR))


def byte_rotate(data: np.ndarray, degrees: float) -> np.ndarray:
    """:func:`bytescale`, then Pillow's bilinear rotation by ``degrees`` counter-clockwise about
    the centre, same size: uint8."""
    return np.asarray(Image.fromarray(bytescale(data)).rotate(degrees, resample=Image.BILINEAR))


def official_face_crop(img: np.ndarray, center, scale: float, size: Sequence[int], rot: float = 0.0) -> np.ndarray:
    """The face repository's crop of ``img`` (H, W, 3) 0-255, taken as float32 as the repository
    loads it (so its byte-scaling stretches): (R_h, R_w, 3) uint8. ``scale`` is the crop's height
    in 200-pixel units (the annotation's times 1.25)."""
    img = np.asarray(img, dtype=np.float32)
    center = np.asarray(center, dtype=np.float64).copy()
    sf = scale * 200.0 / size[0]
    if sf >= 2:
        ht, wd = img.shape[:2]
        if math.floor(max(ht, wd) / sf) < 2:
            return np.zeros((size[0], size[1], img.shape[2]), np.uint8)
        img = byte_resize(img, math.floor(ht / sf), math.floor(wd / sf))
        center, scale = center / sf, scale / sf
    ul = transform_pixel((0, 0), center, scale, size, invert=True)
    br = transform_pixel((size[0], size[1]), center, scale, size, invert=True)
    pad = int(np.linalg.norm(br - ul) / 2 - float(br[1] - ul[1]) / 2)
    if rot:
        ul, br = ul - pad, br + pad
    box = np.zeros((br[1] - ul[1], br[0] - ul[0], img.shape[2]), np.float32)
    x0, x1, y0, y1 = max(0, ul[0]), min(img.shape[1], br[0]), max(0, ul[1]), min(img.shape[0], br[1])
    if x1 > x0 and y1 > y0:
        box[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]] = img[y0:y1, x0:x1]
    if rot:
        box = byte_rotate(box, rot)
        box = box[pad:-pad, pad:-pad] if pad > 0 else box
    return byte_resize(box, size[0], size[1])


def official_face_targets(points: np.ndarray, center, scale: float, heatmap: int, rot: float = 0.0) -> np.ndarray:
    """(K, 2) float32 heatmap-pixel centres of the training targets: each point (0-based image
    pixels) through :func:`transform_pixel` at heatmap resolution, back to 0-based; points with
    a y of 0 or less keep (-1, -1), the repository's mark for no target."""
    out = np.full((len(points), 2), -1.0, np.float32)
    for i, p in enumerate(points):
        if p[1] > 0:
            out[i] = transform_pixel(p + 1, center, scale, (heatmap, heatmap), rot=rot) - 1
    return out


def decode_official(heatmaps: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """Landmarks of (B, K, h, w) heatmaps as the face repository decodes them: (B, K, 2) image
    pixels in whole steps of its transform. ``center`` (B, 2) and ``scale`` (B,) or (B, 2)
    (the first column is used) are the crop's."""
    hm = heatmaps.detach().float().cpu().numpy()
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, -1)
    idx, top = flat.argmax(2), flat.max(2)
    coords = np.stack([idx % w + 1, idx // w + 1], -1).astype(np.float64) * (top > 0)[..., None]
    for n in range(b):
        for j in range(k):
            px, py = int(coords[n, j, 0]), int(coords[n, j, 1])
            if 1 < px < w and 1 < py < h:
                m = hm[n, j]
                coords[n, j] += 0.25 * np.sign([m[py - 1, px] - m[py - 1, px - 2], m[py, px - 1] - m[py - 2, px - 1]])
    coords += 0.5
    c, s = center.double().numpy(), scale.double().reshape(b, -1)[:, 0].numpy()
    return np.stack([np.stack([transform_pixel(coords[n, j], c[n], s[n], (h, w), invert=True) for j in range(k)])
                     for n in range(b)]).astype(np.float64)


def cofw_box(points: np.ndarray) -> Tuple[np.ndarray, float]:
    """COFW's centre and scale (200-pixel units, before the 1.25) from its points: the whole-pixel
    box around them."""
    x0, x1 = math.floor(points[:, 0].min()), math.ceil(points[:, 0].max())
    y0, y1 = math.floor(points[:, 1].min()), math.ceil(points[:, 1].max())
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), max(x1 - x0, y1 - y0) / 200.0
