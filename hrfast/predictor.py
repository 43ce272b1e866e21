"""Top-down pose estimation on whole images: ``hrfast.PoseEstimator``.

Give it an image and person boxes. It crops each person as the official test pipeline does
(aspect-ratio padding, 1.25 enlargement, affine crop), runs the model with an optional flip
test, decodes, and maps the keypoints back to the original image.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from . import deploy
from .data.boxes import boxes_inside, check_boxes
from .data.coco_meta import flip_permutation
from .data.keypoints import COCO17, KeypointSet
from .data.transforms import (
    box_to_center_scale,
    crop_person,
    get_affine_transform,
    read_image_rgb,
    to_tensor,
    warp_crops,
)
from .data.wholebody import NUM_WHOLEBODY, WHOLEBODY133
from .inference import infer_heatmaps
from .models import HRNet
from .ops.decode import final_preds
from .outputs import Staged, write_png
from .timing import StageTimer
from .visualize import draw_skeleton
from .weights import load_weights

ImageLike = Union[str, Path, np.ndarray, torch.Tensor]


def load_image(image: ImageLike) -> np.ndarray:
    """A path, an (H, W, 3) uint8 RGB array, or a (3, H, W) tensor (uint8, or float in [0, 1])
    -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image_rgb(image)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be (3, H, W), got {tuple(image.shape)}")
        arr = image.detach().cpu()
        arr = arr if arr.dtype == torch.uint8 else (arr.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return arr.permute(1, 2, 0).contiguous().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return image
    raise TypeError(f"image must be a path, numpy array or tensor, got {type(image).__name__}")


class PoseEstimator:
    """Keypoints of the people in an image, in original-image pixels.

    Args:
        model: an ``hrfast.HRNet`` (or anything mapping (B, 3, H, W) crops to heatmaps); when
            None it is built from ``config`` and ``checkpoint`` (a state_dict file).
        input_size: network input (width, height); defaults to ``model.input_size``.
        flip_test: average with the horizontally flipped crop (official flip test).
        method: decoding, ``quarter`` | ``dark`` | ``udp``.
        batch_size: crops per forward pass.
        optimize: None (run ``model`` as it is), or the ``runtime`` of :func:`hrfast.optimize`
            to run it through: ``"torch"``, ``"openvino"`` (CPU) or ``"auto"``.
        keypoints: the model's keypoint set (:class:`~hrfast.data.keypoints.KeypointSet`, or a
            json path for :meth:`KeypointSet.load <hrfast.data.keypoints.KeypointSet.load>`:
            the ``keypoint_set.json`` that ``hrfast train`` writes, or a COCO annotation file); its
            flip pairs serve the flip test and its skeleton the drawing. COCO's 17 by default.
        flip_pairs: left/right joint index pairs for the flip test, overriding the set's (a
            model of another keypoint set needs its set or its pairs, or ``flip_test=False``).
        shift_heatmap: the flip test's one-pixel shift of the flipped maps (official
            ``TEST.SHIFT_HEATMAP``, on by default).
    Call ``estimator(image, boxes)`` with boxes (N, 4) ``[x, y, w, h]`` in image pixels (None: the
    whole image is one box). It returns (N, K, 3) float32: x, y and the joint score.
    """

    def __init__(self, model=None, config: str = "w32_256x192", checkpoint=None, device="cpu",
                 input_size: Optional[Sequence[int]] = None, flip_test: bool = True,
                 method: str = "quarter", batch_size: int = 32, optimize: Optional[str] = None,
                 flip_pairs=None, keypoints: Union[KeypointSet, str, Path, None] = None,
                 shift_heatmap: bool = True):
        if model is None:
            model = HRNet.from_config(config)
            if checkpoint is not None:
                load_weights(model, checkpoint)
        self.device = torch.device(device)
        self.input_size = tuple(input_size or getattr(model, "input_size", (192, 256)))
        model = model.to(self.device).eval()
        if optimize is not None:
            model = deploy.optimize(model, device=self.device, runtime=optimize)
        self.num_joints = int(getattr(model, "num_joints", 17))
        if isinstance(keypoints, (str, Path)):
            keypoints = KeypointSet.load(keypoints)
        # a 133-joint model without a set is a COCO-WholeBody one (its flip pairs matter)
        self.keypoints = keypoints or (WHOLEBODY133 if self.num_joints == NUM_WHOLEBODY else COCO17)
        if keypoints is not None and keypoints.num_joints != self.num_joints:
            raise ValueError(f"keypoints describe {keypoints.num_joints} joints but the model predicts "
                             f"{self.num_joints}")
        self.flip_pairs = self.keypoints.flip_pairs if flip_pairs is None else tuple(tuple(p) for p in flip_pairs)
        if flip_test:    # pairs that fit the model's joints, or a clear error now
            flip_permutation(self.num_joints, self.flip_pairs)
        self.model = model
        self.flip_test, self.method, self.batch_size = flip_test, method, int(batch_size)
        self.shift_heatmap = bool(shift_heatmap)

    @torch.no_grad()
    def __call__(self, image: ImageLike, boxes=None) -> np.ndarray:
        return self.estimate([load_image(image)], [boxes])[0]

    @torch.no_grad()
    def estimate(self, images: Sequence[np.ndarray], boxes: Sequence, timer: Optional[StageTimer] = None
                 ) -> List[np.ndarray]:
        """The people of several (H, W, 3) uint8 RGB images at once: their crops go through the
        network in batches of ``batch_size`` across images (video frames), each batch cropped
        just before its forward pass, so memory is bounded by the batch. ``boxes``: per image,
        (N, 4) ``[x, y, w, h]`` or None (the whole image). Returns per image (N, K, 3).
        ``timer`` adds each stage's seconds (crop, network, decode)."""
        timer = timer or StageTimer()
        aspect = self.input_size[0] / self.input_size[1]
        with timer("crop"):
            per_image = [np.array([[0, 0, im.shape[1], im.shape[0]]], np.float64) if b is None else check_boxes(b)
                         for im, b in zip(images, boxes)]
            jobs = [(i, *box_to_center_scale(b[:4], aspect)) for i, bs in enumerate(per_image) for b in bs]
        out = []
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            with timer("crop"):
                crops = self._crops(images, batch)
            with timer("network"):
                hm = infer_heatmaps(self.model, crops, self.flip_test, self.shift_heatmap, pairs=self.flip_pairs).cpu()
            with timer("decode"):
                out.append(final_preds(hm, torch.from_numpy(np.stack([c for _, c, _ in batch])),
                                       torch.from_numpy(np.stack([s for _, _, s in batch])), self.method))
        flat = torch.cat(out).numpy() if out else np.zeros((0, self.num_joints, 3), np.float32)
        counts = np.cumsum([0] + [len(b) for b in per_image])
        return [flat[a:b] for a, b in zip(counts[:-1], counts[1:])]

    def _crops(self, images, jobs) -> torch.Tensor:
        """(M, 3, H, W) crops of ``jobs`` (image index, center, scale) on the model's device.
        On CUDA the crops of each image are one batched warp on the device; on the CPU
        OpenCV's warpAffine (faster there)."""
        if self.device.type != "cuda":
            return torch.stack([to_tensor(crop_person(images[i], c, s, self.input_size)[0]) for i, c, s in jobs])
        parts = []
        for i in sorted({i for i, _, _ in jobs}):   # jobs come grouped by image, in order
            mats = np.stack([get_affine_transform(c, s, 0.0, self.input_size) for j, c, s in jobs if j == i])
            image = torch.from_numpy(np.ascontiguousarray(images[i])).to(self.device)
            parts.append(warp_crops(image, mats, self.input_size))
        return torch.cat(parts)

    def draw(self, image: ImageLike, keypoints, path=None, threshold: float = 0.2) -> np.ndarray:
        """Skeletons (of the estimator's keypoint set) drawn on the image (RGB uint8); also
        written as PNG when ``path`` is given."""
        out = draw_skeleton(load_image(image), keypoints, threshold, keypoint_set=self.keypoints)
        if path is not None:
            write_png(path, out)     # whole or not at all (hrfast.outputs)
        return out


def predict_images(paths: Sequence[Union[str, Path]], est: "PoseEstimator", out: Path, boxes=None, detector=None,
                   threshold: float = 0.2) -> dict:
    """Keypoints and drawings of still images, all written at the end or none (a failure
    leaves earlier outputs as they were): ``OUT/<stem>_pose.png`` per image and
    ``OUT/keypoints.json``.

    ``boxes``: per image, (N, 4) [x, y, w, h] person boxes in image pixels, or None (the
    detector's boxes, else the whole image). Returns ``lines`` (one per image), ``json``,
    ``outside`` (boxes dropped as wholly outside their image) and ``found_none`` (images where
    the detector found nobody)."""
    records, lines, found_none, outside = [], [], 0, 0
    boxes = [None] * len(paths) if boxes is None else boxes
    with Staged() as staged:
        for im, b, stem in zip(paths, boxes, output_names(paths)):
            image = load_image(im)      # decoded once for the detector, the network and the drawing
            if b is None and detector is not None:
                b = detector(image)[:, :4]
                found_none += len(b) == 0
            if b is not None:
                b, dropped = boxes_inside(b, image.shape[1], image.shape[0])
                outside += dropped
            kp = est(image, b)
            png = staged.png(out / f"{stem}_pose.png", est.draw(image, kp, threshold=threshold))
            records.append({"file_name": Path(im).name, "boxes": None if b is None else b.tolist(),
                            "keypoints": [[[round(float(v), 2) for v in j] for j in p] for p in kp]})
            lines.append(f"{im}: {len(kp)} people -> {png}")
        staged.json(out / "keypoints.json", records)
    return {"lines": lines, "json": out / "keypoints.json", "outside": outside, "found_none": found_none}


def output_names(images: Sequence[Union[str, Path]]) -> List[str]:
    """Drawing names unique per call: two images named alike in different folders get
    ``_2``, ``_3``... rather than overwrite each other."""
    seen, names = {}, []
    for im in images:
        stem = Path(im).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names

