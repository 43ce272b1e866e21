"""Geometry of top-down pose estimation in the official HRNet/SimpleBaseline conventions.

A person is described by ``center`` (x, y) in original-image pixels and ``scale`` (sw, sh) in
units of ``PIXEL_STD`` = 200 pixels. The affine crop maps the box ``center ± scale*200/2`` onto the
network input (width, height), keeping the aspect ratio (the box is padded to it beforehand).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch

PIXEL_STD = 200.0
# ImageNet normalization of RGB images in [0, 1].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def box_to_center_scale(box: Sequence[float], aspect_ratio: float, padding: float = 1.25
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) box in image pixels -> center (2,), scale (2,) in PIXEL_STD units.

    The box is widened or heightened to ``aspect_ratio`` = input width / height, then enlarged by
    ``padding`` (1.25 in the official recipe).
    """
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * padding
    return center, scale


def _rotate(pt: np.ndarray, rad: float) -> np.ndarray:
    s, c = math.sin(rad), math.cos(rad)
    return np.array([pt[0] * c - pt[1] * s, pt[0] * s + pt[1] * c], dtype=np.float32)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(center: Sequence[float], scale: Sequence[float], rot: float,
                         output_size: Sequence[int], shift: Sequence[float] = (0.0, 0.0),
                         inv: bool = False) -> np.ndarray:
    """2x3 matrix mapping image pixels to output pixels (``inv``: output to image).

    ``rot`` in degrees; ``output_size`` = (width, height). Three point pairs (box centre, a point
    half a box-width above it, and the point turned 90 degrees from that) fix the transform;
    only ``scale[0]`` (the width) is used, as in the official code.
    """
    center = np.asarray(center, dtype=np.float32)
    src_w = float(scale[0]) * PIXEL_STD
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rad = math.radians(rot)
    src_dir = _rotate(np.array([0.0, src_w * -0.5], dtype=np.float32), rad)
    dst_dir = np.array([0.0, dst_w * -0.5], dtype=np.float32)
    offset = np.asarray(shift, dtype=np.float32) * src_w
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center + offset
    src[1] = center + src_dir + offset
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def box_overlaps_image(x, y, w, h, width, height):
    """Whether [x, y, w, h] boxes (scalars or arrays) have any part inside a ``width`` x
    ``height`` image: one wholly outside holds no pixel of a person, so its pose would be made up."""
    return (x < width) & (y < height) & (x + w > 0) & (y + h > 0)


def crop_person(image: np.ndarray, center, scale, output_size: Sequence[int], rot: float = 0.0
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Affine-crop ``image`` (H, W, 3) to ``output_size`` (width, height).

    Returns the crop (height, width, 3) and the 2x3 image->crop matrix.
    """
    m = get_affine_transform(center, scale, rot, output_size)
    crop = cv2.warpAffine(image, m, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR)
    return crop, m


def to_tensor(crop_rgb: np.ndarray):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 tensor, ImageNet-normalized."""
    x = (crop_rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _check_complete(data: bytes, path) -> None:
    """Refuse a JPEG or PNG whose data stops before its end marker: libjpeg would decode the
    rows it has, fill the rest with grey, and only warn."""
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise ValueError(f"image {path} is truncated: its JPEG data ends before the end-of-image marker")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise ValueError(f"image {path} is truncated: its PNG data ends before the IEND chunk")


def check_image_file(path) -> None:
    """The checks of :func:`read_image_rgb` that need no decoding (exists, complete), so that a
    command can refuse a bad image before it writes anything."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(path.stat().st_size - 1024, 0))
        _check_complete(head[:8] + f.read() if path.stat().st_size > 8 else head, path)


def read_image_rgb(path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; a clear error if it is missing, truncated
    or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"image {path} is empty (0 bytes)")
    _check_complete(data, path)
    img, said = _decode_listening(data)
    if img is None:
        raise ValueError(f"could not decode image: {path}" + (f" ({said[0]})" if said else ""))
    bad = [s for s in said if any(w in s.lower() for w in _CORRUPT_WORDS)]
    if bad:
        raise ValueError(f"image {path} is corrupt: the decoder says {bad[0]!r} (it would fill the damaged "
                         f"part with grey)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# what libjpeg and libpng print, through OpenCV, for data they patch over instead of refusing
_CORRUPT_WORDS = ("corrupt", "premature end", "error", "invalid", "bad huffman")


def _decode_listening(data: bytes):
    """``cv2.imdecode`` of ``data``, and the lines the codec libraries wrote to stderr meanwhile.

    libjpeg reports damaged data ("Corrupt JPEG data: premature end of data segment") only as a
    warning on file descriptor 2 and decodes on with grey; OpenCV passes no status back. So fd 2
    goes to a pipe for the call (non-blocking: a codec that wrote more than the pipe holds would
    lose lines, never hang)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(write_end, 2)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
    os.set_blocking(read_end, False)
    try:
        said = os.read(read_end, 1 << 16).decode("utf-8", "replace")
    except BlockingIOError:
        said = ""
    finally:
        os.close(read_end)
    return img, [line.strip() for line in said.splitlines() if line.strip()]


def warp_crops(image: torch.Tensor, matrices: np.ndarray, output_size: Sequence[int]) -> torch.Tensor:
    """All crops of one image in one ``grid_sample``, on the image's device: ``image`` (H, W, 3)
    uint8 RGB tensor, ``matrices`` (N, 2, 3) image->crop affine matrices -> (N, 3, h, w)
    float32, ImageNet-normalized, as ``to_tensor(cv2.warpAffine(...))`` gives them (bilinear,
    zero outside the image; OpenCV rounds its weights to 1/32, so values differ by a few
    levels of 255 at most)."""
    n = len(matrices)
    w, h = int(output_size[0]), int(output_size[1])
    H, W = image.shape[:2]
    dev = image.device
    inv = np.stack([cv2.invertAffineTransform(np.asarray(m, np.float64)) for m in matrices]).reshape(n, 2, 3)
    inv = torch.as_tensor(inv, dtype=torch.float32, device=dev)
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                          torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, h * w, 3)       # crop pixel centres
    xy = pix @ inv.transpose(1, 2)                                              # (N, h*w, 2) image pixels
    grid = torch.stack([2 * xy[..., 0] / max(W - 1, 1) - 1, 2 * xy[..., 1] / max(H - 1, 1) - 1], -1)
    src = image.permute(2, 0, 1).unsqueeze(0).float().expand(n, 3, H, W)         # a view: no copies
    crops = torch.nn.functional.grid_sample(src, grid.reshape(n, h, w, 2), mode="bilinear",
                                            padding_mode="zeros", align_corners=True)
    mean = torch.as_tensor(IMAGENET_MEAN * 255.0, device=dev).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD * 255.0, device=dev).view(1, 3, 1, 1)
    return (crops - mean) / std
