"""pytest-benchmark: whole-model inference variants and the end-to-end predict path.

CPU-sized by default (the small config). Set HRFAST_BENCH_CONFIG=w32_256x192 (and run on a GPU)
for the issue's shapes; ``hrfast bench --compare`` prints the same comparison as a table.
Groups hold the variants of one workload, so pytest-benchmark shows them side by side.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hrfast import HRNet, PoseEstimator
from hrfast.bench import inference_variant

CONFIG = os.environ.get("HRFAST_BENCH_CONFIG", "w18_small_128x96")
BATCH = int(os.environ.get("HRFAST_BENCH_BATCH", "8"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
COCO_MINI = Path(__file__).resolve().parent.parent / "data" / "coco-mini"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HRNet.from_config(CONFIG).to(DEV).eval()


@pytest.mark.parametrize("name", ["eager fp32", "eager AMP", "torch.compile", "optimize"])
def test_inference(benchmark, model, name):
    benchmark.group = f"inference {CONFIG} batch {BATCH} ({DEV})"
    w, h = model.input_size
    x = torch.randn(BATCH, 3, h, w, device=DEV)
    fn = inference_variant(model, name, DEV)
    with torch.no_grad():
        fn(x)                                   # compile outside the timing
        benchmark.pedantic(lambda: fn(x), rounds=5, warmup_rounds=1)


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
