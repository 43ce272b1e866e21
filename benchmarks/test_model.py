"""pytest-benchmark: whole-model inference variants and the end-to-end predict path.

CPU-sized by default (the small config). Set HRFAST_BENCH_CONFIG=w32_256x192 or w48_384x288
(and run on a GPU) for the issue's shapes, HRFAST_BENCH_BATCH to a comma-separated list of
inference batch sizes (default 1,32) and HRFAST_BENCH_TRAIN_BATCH for the training step
(default 8). ``hrfast bench --compare`` prints the same comparison as a table, with the
variants timed in interleaved rounds. Groups hold the variants of one workload, so
pytest-benchmark shows them side by side; ``extra_info["peak_mib"]`` is the memory one call
adds (``hrfast.benchmarking.peak_memory_mib``).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hrfast import HRNet, PoseEstimator
from hrfast.benchmarking import (
    CPU_VARIANTS,
    INFERENCE_VARIANTS,
    TRAINING_VARIANTS,
    available_inference_variants,
    inference_variant,
    peak_memory_mib,
    training_variant,
)

CONFIG = os.environ.get("HRFAST_BENCH_CONFIG", "w18_small_128x96")
BATCHES = [int(b) for b in os.environ.get("HRFAST_BENCH_BATCH", "1,32").split(",")]
TRAIN_BATCH = int(os.environ.get("HRFAST_BENCH_TRAIN_BATCH", "8"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
COCO_MINI = Path(__file__).resolve().parent.parent / "data" / "coco-mini"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HRNet.from_config(CONFIG).to(DEV).eval()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", INFERENCE_VARIANTS + tuple(CPU_VARIANTS))
def test_inference(benchmark, model, name, batch):
    if name not in available_inference_variants(DEV):
        pytest.skip(f"{name} runs on the CPU only, with {CPU_VARIANTS[name]} installed"
                    + (" and native bf16" if name.endswith("bf16") else ""))
    benchmark.group = f"inference {CONFIG} batch {batch} ({DEV})"
    w, h = model.input_size
    x = torch.randn(batch, 3, h, w, device=DEV)
    fn = inference_variant(model, name, DEV)
    with torch.no_grad():
        fn(x)                                   # compile outside the timing
        benchmark.extra_info["peak_mib"] = peak_memory_mib(lambda: fn(x), DEV)
        benchmark.pedantic(lambda: fn(x), rounds=5, warmup_rounds=1)
    benchmark.extra_info["images"] = batch


@pytest.mark.parametrize("name", TRAINING_VARIANTS)
def test_training_step(benchmark, model, name):
    """Forward, MSE loss, backward, Adam on random targets."""
    benchmark.group = f"training step {CONFIG} batch {TRAIN_BATCH} ({DEV})"
    step = training_variant(model, name, TRAIN_BATCH, DEV)
    step()                                      # Adam state and autocast caches exist from here on
    benchmark.extra_info["peak_mib"] = peak_memory_mib(step, DEV)
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    benchmark.extra_info["images"] = TRAIN_BATCH


def test_predict_end_to_end(benchmark, model):
    """Decoded image -> crops -> network (flip test) -> DARK decoding -> image keypoints."""
    benchmark.group = f"predict {CONFIG} ({DEV})"
    dets = json.loads((COCO_MINI / "annotations" / "person_detections.json").read_text())
    images = sorted((COCO_MINI / "images").glob("*.jpg"))
    est = PoseEstimator(model, device=DEV, method="dark")
    from hrfast.predictor import load_image
    data = [(load_image(p), np.array([d["bbox"] for d in dets
                                      if d["image_id"] == int(p.stem) and d["score"] > 0.5])) for p in images]
    people = sum(len(b) for _, b in data)

    def run():
        for img, boxes in data:
            est(img, boxes)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info["people"] = people
