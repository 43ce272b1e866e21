"""Facial landmarks with HRNetV2: training, NME evaluation per subset, and prediction.

The recipe is HRNet-Facial-Landmark-Detection's: Adam at 1e-4 decayed 10x at epochs 30/50 of
60, Gaussian heatmap targets of sigma 1.5 at a quarter of the 256x256 crop, MSE (here from the
joints, :func:`hrfast.ops.heatmap_loss.joints_mse_loss`). Its experiment YAML's ``DATASET``
(``ROOT``: the image root, ``TRAINSET`` / ``TESTSET``: the CSV lists, ``SCALE_FACTOR``,
``ROT_FACTOR``, ``FLIP``), ``MODEL`` (``NUM_JOINTS``, ``SIGMA``, ``IMAGE_SIZE``) and ``TRAIN``
keys are read, and ``HRFAST.FACE_PIPELINE``: ``official`` (the default: the face repository's
integer crop and decoding, under which its checkpoints give their published NME) or ``affine``
(sub-pixel crop and the pose decoder; :mod:`hrfast.data.faces`).

NME is the official ``compute_nme``: per face, the mean point-to-point distance divided by the
normalising distance (:func:`hrfast.data.faces.normaliser`), averaged over faces; the failure
rates count faces above 0.08 and 0.10. A test list ``<name>.csv`` with siblings
``<name>_<subset>.csv`` gets one row per subset.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np
import torch
from tqdm import tqdm

from ..data.face_official import decode_official, official_face_crop
from ..data.faces import PIPELINES, FaceLandmarks
from ..models import build_model
from ..ops.decode import final_preds
from ..ops.heatmap_loss import joints_mse_loss
from .data import loader_workers, make_loader
from .epochs import Loop, cpu_training_layout, run_epochs


@dataclass(frozen=True)
class FaceSettings:
    root: str = ""                  # DATASET.ROOT: the folder image_name is relative to
    train_list: str = ""            # DATASET.TRAINSET
    test_list: str = ""             # DATASET.TESTSET
    num_points: int = 98            # MODEL.NUM_JOINTS
    sigma: float = 1.5              # MODEL.SIGMA
    image_size: int = 256           # MODEL.IMAGE_SIZE
    scale_factor: float = 0.25      # DATASET.SCALE_FACTOR
    rot_factor: float = 30.0        # DATASET.ROT_FACTOR
    flip: bool = True               # DATASET.FLIP
    epochs: int = 60                # TRAIN.END_EPOCH
    batch_size: int = 16            # TRAIN.BATCH_SIZE_PER_GPU
    test_batch_size: int = 32       # TEST.BATCH_SIZE_PER_GPU
    lr: float = 1e-4                # TRAIN.LR
    lr_step: tuple = (30, 50)       # TRAIN.LR_STEP
    lr_factor: float = 0.1          # TRAIN.LR_FACTOR
    workers: object = "auto"        # WORKERS
    seed: int = 0
    pipeline: str = "official"      # HRFAST.FACE_PIPELINE


def face_settings(raw: Mapping, **overrides) -> FaceSettings:
    """The settings of an official face YAML's contents, then ``overrides`` where not None."""
    d, m, t = raw.get("DATASET") or {}, raw.get("MODEL") or {}, raw.get("TRAIN") or {}
    b = FaceSettings()
    s = replace(b, root=str(d.get("ROOT", b.root)), train_list=str(d.get("TRAINSET", b.train_list)),
                test_list=str(d.get("TESTSET", b.test_list)), num_points=int(m.get("NUM_JOINTS", b.num_points)),
                sigma=float(m.get("SIGMA", b.sigma)), image_size=int((m.get("IMAGE_SIZE") or [b.image_size])[0]),
                scale_factor=float(d.get("SCALE_FACTOR", b.scale_factor)),
                rot_factor=float(d.get("ROT_FACTOR", b.rot_factor)), flip=bool(d.get("FLIP", b.flip)),
                epochs=int(t.get("END_EPOCH", b.epochs)), batch_size=int(t.get("BATCH_SIZE_PER_GPU", b.batch_size)),
                test_batch_size=int((raw.get("TEST") or {}).get("BATCH_SIZE_PER_GPU", b.test_batch_size)),
                lr=float(t.get("LR", b.lr)), lr_step=tuple(int(v) for v in t.get("LR_STEP", b.lr_step)),
                lr_factor=float(t.get("LR_FACTOR", b.lr_factor)), workers=raw.get("WORKERS", b.workers),
                pipeline=str((raw.get("HRFAST") or {}).get("FACE_PIPELINE", b.pipeline)))
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if s.pipeline not in PIPELINES:
        raise ValueError(f"HRFAST.FACE_PIPELINE must be one of {', '.join(PIPELINES)}, got {s.pipeline!r}")
    if (t.get("OPTIMIZER") or "adam") != "adam":
        raise ValueError(f"TRAIN.OPTIMIZER: the face task trains with adam (the official recipe), got "
                         f"{t.get('OPTIMIZER')!r}")
    return s


def nme(preds: np.ndarray, points: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """(N,) normalised mean errors: mean over the K points of ||pred - point||, over ``norms``."""
    return np.linalg.norm(preds - points, axis=2).mean(1) / norms


def nme_stats(errors: np.ndarray) -> Dict[str, float]:
    return {"NME": float(errors.mean()), "FR@0.08": float((errors > 0.08).mean()),
            "FR@0.10": float((errors > 0.10).mean()), "faces": float(len(errors))}


def decode_landmarks(heat: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, pipeline: str) -> np.ndarray:
    """(B, K, 2) image pixels of (B, K, h, w) heatmaps of crops at ``center`` (B, 2) and
    ``scale`` (B, 2): the face repository's decoding, or the pose decoder's for ``affine``."""
    if pipeline == "official":
        return decode_official(heat, center, scale)
    return final_preds(heat, center, scale)[..., :2].numpy()


@torch.no_grad()
def predict_landmarks(model, loader, device, progress: bool = True, pipeline: str = "official"):
    """(predictions (N, K, 2), points (N, K, 2), norms (N,)) in image pixels."""
    model.eval()
    out = ([], [], [])
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        heat = model(batch["image"].to(device)).float().cpu()
        out[0].append(decode_landmarks(heat, batch["center"], batch["scale"], pipeline))
        out[1].append(batch["points"].numpy())
        out[2].append(batch["norm"].numpy())
    return tuple(np.concatenate(x) for x in out)


def subset_lists(test_list: str) -> Dict[str, Path]:
    """The test list and its ``<stem>_<subset>.csv`` siblings: {"full": list, subset: file}."""
    path = Path(test_list)
    subsets = {p.stem[len(path.stem) + 1:]: p for p in sorted(path.parent.glob(f"{path.stem}_*.csv"))}
    return {"full": path, **subsets}


def evaluate_faces(model, s: FaceSettings, device, progress: bool = True) -> Dict[str, float]:
    """NME and failure rates on the test list (``NME``, ...) and each subset (``<subset> NME``)."""
    stats: Dict[str, float] = {}
    for name, path in subset_lists(s.test_list).items():
        ds = FaceLandmarks(path, s.root, s.num_points, s.image_size, pipeline=s.pipeline)
        loader = make_loader(ds, s.test_batch_size, False, loader_workers(s.workers), 1, 0, 0)
        prefix = "" if name == "full" else f"{name} "
        found = predict_landmarks(model, loader, device, progress, s.pipeline)
        stats.update({prefix + k: v for k, v in nme_stats(nme(*found)).items()})
    return stats


def format_faces(stats: Dict[str, float]) -> str:
    rows = [""] + sorted({k[:-len(" NME")] for k in stats if k.endswith(" NME")})
    lines = ["| subset | faces | NME | FR@0.08 | FR@0.10 |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        p = f"{r} " if r else ""
        lines.append(f"| {r or 'full'} | {int(stats[p + 'faces'])} | {stats[p + 'NME'] * 100:.2f}% | "
                     f"{stats[p + 'FR@0.08'] * 100:.2f}% | {stats[p + 'FR@0.10'] * 100:.2f}% |")
    return "\n".join(lines)


def train_faces(raw: Mapping, s: FaceSettings, out_dir, resume: bool = False, device: str = "cpu",
                progress: bool = True) -> Dict:
    """Train the landmark net of ``raw`` (a parsed face YAML) per ``s``; NME after each epoch."""
    torch.manual_seed(s.seed)
    model = cpu_training_layout(build_model(raw).to(device), device)
    train_set = FaceLandmarks(s.train_list, s.root, s.num_points, s.image_size, train=True,
                              scale_factor=s.scale_factor, rot_factor=s.rot_factor, flip=s.flip, seed=s.seed,
                              pipeline=s.pipeline)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    size = (s.image_size, s.image_size)

    def loss(batch):
        return joints_mse_loss(model(batch["image"].to(device)), batch["joints"].to(device),
                               batch["joints_vis"].to(device), size, s.sigma).mean()

    loop = Loop(model, opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(s.lr_step), s.lr_factor), train_set, loss,
                lambda: evaluate_faces(model, s, device, progress), lambda st: -st["NME"], s.epochs, s.batch_size,
                loader_workers(s.workers), s.seed)
    return run_epochs(loop, out_dir, resume, progress)


@torch.no_grad()
def landmarks_of_images(model, images: List, size: int, device="cpu", pipeline: str = "official") -> List[np.ndarray]:
    """(K, 2) landmarks of each image file, the whole image taken as the face's box, cropped and
    decoded by ``pipeline``."""
    import cv2

    from ..data.transforms import get_affine_transform, read_image_rgb, to_tensor
    out = []
    for path in images:
        img = read_image_rgb(path)
        h, w = img.shape[:2]
        center, scale = np.array([w / 2, h / 2]), max(w, h) / 200.0       # the box is the image
        if pipeline == "official":
            crop = official_face_crop(img, center, scale, (size, size))
        else:
            crop = cv2.warpAffine(img, get_affine_transform(center, (scale, scale), 0.0, (size, size)), (size, size),
                                  flags=cv2.INTER_LINEAR)
        heat = model.eval()(to_tensor(crop)[None].to(device)).float().cpu()
        c, sc = torch.tensor(center[None], dtype=torch.float32), torch.tensor([[scale, scale]], dtype=torch.float32)
        out.append(decode_landmarks(heat, c, sc, pipeline)[0])
    return out
