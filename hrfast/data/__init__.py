"""Datasets, transforms and the synthetic COCO-format generator."""
