"""Where the time of a pipeline goes: seconds per named stage."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Dict


class StageTimer:
    """``with timer("network"): ...`` adds the block's wall time to that stage. CUDA work is
    asynchronous: a stage that must own its GPU time synchronizes (``sync``) on exit."""

    def __init__(self, sync=None):
        self.seconds: Dict[str, float] = defaultdict(float)
        self.sync = sync

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.seconds[stage] += time.perf_counter() - t0

    def shares(self) -> Dict[str, float]:
        """Each stage's fraction of the total."""
        total = sum(self.seconds.values()) or 1.0
        return {k: v / total for k, v in self.seconds.items()}

    def report(self) -> str:
        total = sum(self.seconds.values())
        parts = [f"{k} {v:.2f} s ({v / max(total, 1e-12):.0%})" for k, v in self.seconds.items()]
        return "time by stage: " + ", ".join(parts) + f"; total {total:.2f} s"
