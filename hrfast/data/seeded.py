"""Datasets whose augmentation is a function of (seed, epoch, index): a sample does not depend on
the worker that loads it or on a restart, so a resumed run sees the data it would have seen."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


class SeededDataset(Dataset):
    """A dataset over ``self.items`` with :meth:`set_epoch` and :meth:`rng`."""

    items: list
    seed: int = 0
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), self.epoch, index])
