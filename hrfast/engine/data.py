"""Data for training and evaluation: where the config's datasets live, the dataset objects,
and their loaders (sharded under DDP, shuffled as a function of (seed, epoch))."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from ..config import Config
from ..data.coco import Augmentation, COCOKeypoints
from ..data.mpii import MPIIKeypoints, mpii_paths


def dataset_paths(cfg: Config, split: str):
    """(ann_file, image_dir) of ``split`` ('train' or 'test'): explicit DATASET.*_ANN/*_IMAGES
    or the official layout: COCO's ROOT/annotations/person_keypoints_<SET>.json and
    ROOT/images/<SET>, MPII's ROOT/annot/<SET>.json and ROOT/images."""
    d = cfg.DATASET
    ann, images = (d.TRAIN_ANN, d.TRAIN_IMAGES) if split == "train" else (d.TEST_ANN, d.TEST_IMAGES)
    name = d.TRAIN_SET if split == "train" else d.TEST_SET
    root = Path(d.ROOT) if d.ROOT else None
    if d.DATASET == "mpii" and root is not None:
        paths = mpii_paths(root, name)
        return Path(ann or paths["ann"]), Path(images or paths["images"])
    if not ann:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_ANN must name the {split} data")
        ann = root / "annotations" / f"person_keypoints_{name}.json"
    if not images:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_IMAGES must name the {split} images")
        images = root / "images" / name
    return Path(ann), Path(images)


def build_dataset(cfg: Config, train: bool, targets_on_device: bool = False) -> COCOKeypoints:
    """The train or test dataset of ``cfg``: ``DATASET.DATASET`` "coco" (any COCO-format
    keypoint file) or "mpii"."""
    ann, images = dataset_paths(cfg, "train" if train else "test")
    d = cfg.DATASET
    det = None
    if not train and not cfg.TEST.USE_GT_BBOX:
        if not cfg.TEST.COCO_BBOX_FILE:
            raise ValueError("config TEST.USE_GT_BBOX is false but TEST.COCO_BBOX_FILE is empty")
        det = cfg.TEST.COCO_BBOX_FILE
    aug = Augmentation(scale_factor=float(d.SCALE_FACTOR), rotation_factor=float(d.ROT_FACTOR),
                       flip=bool(d.FLIP), prob_half_body=float(d.PROB_HALF_BODY),
                       num_joints_half_body=int(d.NUM_JOINTS_HALF_BODY))
    max_n = int(cfg.HRFAST.MAX_TRAIN_IMAGES) if train and cfg.HRFAST.MAX_TRAIN_IMAGES else None
    if d.DATASET == "mpii":
        gt = None if train else mpii_paths(d.ROOT or Path(ann).parent.parent, d.TEST_SET)["gt"]
        return MPIIKeypoints(ann, images, cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE, train=train,
                             sigma=float(cfg.MODEL.SIGMA), encoding=cfg.HRFAST.TARGET_ENCODING,
                             targets_on_device=targets_on_device, augmentation=aug,
                             use_joint_weights=bool(cfg.LOSS.USE_DIFFERENT_JOINTS_WEIGHT), seed=int(cfg.HRFAST.SEED),
                             max_samples=max_n, num_joints=int(cfg.MODEL.NUM_JOINTS), gt_file=gt)
    return COCOKeypoints(ann, images, cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE, train=train,
                         det_file=det, image_thre=float(cfg.TEST.IMAGE_THRE), sigma=float(cfg.MODEL.SIGMA),
                         encoding=cfg.HRFAST.TARGET_ENCODING, targets_on_device=targets_on_device,
                         augmentation=aug, use_joint_weights=bool(cfg.LOSS.USE_DIFFERENT_JOINTS_WEIGHT),
                         seed=int(cfg.HRFAST.SEED), max_samples=max_n, num_joints=int(cfg.MODEL.NUM_JOINTS),
                         **keypoint_overrides(cfg))


def keypoint_overrides(cfg: Config) -> dict:
    """The config's ``DATASET`` keypoint keys as COCOKeypoints arguments (None where empty)."""
    d = cfg.DATASET
    return {"flip_pairs": [tuple(p) for p in d.FLIP_PAIRS] or None, "sigmas": list(d.SIGMAS) or None,
            "joint_weights": list(d.JOINT_WEIGHTS) or None, "upper_body": list(d.UPPER_BODY) or None}


def make_loader(dataset, batch_size: int, train: bool, workers: int, world: int, rank: int,
                seed: int, epoch: int = 0, pin_memory: bool = False, shuffle: bool = True):
    """A loader of ``dataset``; training loaders shuffle (unless ``shuffle`` is false, the
    official TRAIN.SHUFFLE) and drop the last partial batch."""
    shuffle = train and shuffle
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        # the shuffle order is a function of (seed, epoch): a resumed run sees the same order
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=train, pin_memory=pin_memory, persistent_workers=False)


def loader_workers(cfg) -> int:
    """The data-loading processes of ``cfg.WORKERS``: ``auto`` (the default) is the cores this
    process may use minus one, at most 8, so the training threads keep a core; a number is
    kept as given, with one note when it exceeds the cores (the official files say 24)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cfg.WORKERS == "auto":
        return max(0, min(8, cores - 1))
    workers = int(cfg.WORKERS)
    if workers > cores:     # said once: the warnings module shows a message once per place
        warnings.warn(f"WORKERS is {workers} (from the config) on a machine with {cores} cores: WORKERS: auto "
                      f"fits the loaders to the machine", UserWarning, stacklevel=2)
    return workers

