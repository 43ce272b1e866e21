"""Data for training and evaluation: where the config's datasets live, the dataset objects,
and their loaders (sharded under DDP, shuffled as a function of (seed, epoch))."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from ..data.coco import COCOKeypoints
from ..data.mpii import MPIIKeypoints, mpii_paths
from ..settings import DataSettings


def dataset_paths(data: DataSettings, split: str):
    """(ann_file, image_dir) of ``split`` ('train' or 'test'): explicit DATASET.*_ANN/*_IMAGES
    or the official layout: COCO's ROOT/annotations/person_keypoints_<SET>.json and
    ROOT/images/<SET>, COCO-WholeBody's ROOT/annotations/coco_wholebody_<SET less 2017>_v1.0.json
    and ROOT/images/<SET>, MPII's ROOT/annot/<SET>.json and ROOT/images."""
    train = split == "train"
    ann, images = (data.train_ann, data.train_images) if train else (data.test_ann, data.test_images)
    name = data.train_set if train else data.test_set
    root = Path(data.root) if data.root else None
    if data.kind == "mpii" and root is not None:
        paths = mpii_paths(root, name)
        return Path(ann or paths["ann"]), Path(images or paths["images"])
    if not ann:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_ANN must name the {split} data")
        # COCO-WholeBody's files are named for the split without the year: coco_wholebody_val_v1.0.json
        ann = root / "annotations" / (f"coco_wholebody_{name.replace('2017', '')}_v1.0.json"
                                      if data.kind == "coco-wholebody" else f"person_keypoints_{name}.json")
    if not images:
        if root is None:
            raise ValueError(f"config DATASET.ROOT or DATASET.{split.upper()}_IMAGES must name the {split} images")
        images = root / "images" / name
    return Path(ann), Path(images)


def build_dataset(data: DataSettings, train: bool, targets_on_device: bool = False) -> COCOKeypoints:
    """The train or test dataset: ``data.kind`` "coco" (any COCO-format keypoint file) or
    "mpii". ``targets_on_device``: the samples carry joints, and the training step makes the
    heatmaps."""
    ann, images = dataset_paths(data, "train" if train else "test")
    common = dict(train=train, sigma=data.sigma, encoding=data.encoding, targets_on_device=targets_on_device,
                  augmentation=data.augmentation, use_joint_weights=data.use_joint_weights, seed=data.seed,
                  max_samples=data.max_train_images if train and data.max_train_images else None,
                  num_joints=data.num_joints)
    if data.kind == "mpii":
        gt = None if train else mpii_paths(data.root or Path(ann).parent.parent, data.test_set)["gt"]
        return MPIIKeypoints(ann, images, data.image_size, data.heatmap_size, gt_file=gt, **common)
    det = None
    if not train and not data.use_gt_bbox:
        if not data.bbox_file:
            raise ValueError("config TEST.USE_GT_BBOX is false but TEST.COCO_BBOX_FILE is empty")
        det = data.bbox_file
    return COCOKeypoints(ann, images, data.image_size, data.heatmap_size, det_file=det, image_thre=data.image_thre,
                         **common, **data.keypoint_overrides())


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


def loader_workers(setting: Union[str, int]) -> int:
    """The data-loading processes of the ``WORKERS`` setting: ``auto`` (the default) is the cores this
    process may use minus one, at most 8, so the training threads keep a core; a number is
    kept as given, with one note when it exceeds the cores (the official files say 24)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if setting == "auto":
        return max(0, min(8, cores - 1))
    workers = int(setting)
    if workers > cores:     # said once: the warnings module shows a message once per place
        warnings.warn(f"WORKERS is {workers} (from the config) on a machine with {cores} cores: WORKERS: auto "
                      f"fits the loaders to the machine", UserWarning, stacklevel=2)
    return workers

