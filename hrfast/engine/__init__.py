"""Training and evaluation: losses, the training loop, COCO evaluation."""
