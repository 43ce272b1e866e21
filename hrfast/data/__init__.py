"""Data: COCO keypoints loading and augmentation, the crop geometry, the synthetic dataset."""
from .coco import Augmentation, COCOKeypoints
from .synthetic import make_synthetic_coco

__all__ = ["COCOKeypoints", "Augmentation", "make_synthetic_coco"]
