"""`hrfast check`: a quick end-to-end check of the model on real data.

``model_check``: build an HRNet, save and reload its checkpoint (strict), run it on a real COCO
person crop from ``data/coco-mini``, and measure CPU inference throughput.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .bench import inference_throughput
from .config import resolve_config
from .data.transforms import box_to_center_scale, crop_person, read_image_rgb, to_tensor
from .models import HRNet
from .profile import count_macs, count_parameters

COCO_MINI = Path(__file__).resolve().parent.parent / "data" / "coco-mini"


def first_person(root: Path = COCO_MINI):
    """(image path, (x, y, w, h) box) of the first annotated person of the coco-mini data."""
    ann_file = root / "annotations" / "person_keypoints.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"coco-mini annotations not found: {ann_file}")
    data = json.loads(ann_file.read_text())
    ann = max(data["annotations"], key=lambda a: a["area"])
    img = next(i for i in data["images"] if i["id"] == ann["image_id"])
    return root / "images" / img["file_name"], ann["bbox"]


def model_check(config: str = "w32_256x192", batch: int = 8, out_dir: Path = Path("outputs/demo")) -> int:
    torch.manual_seed(0)
    cfg = resolve_config(config)
    t0 = time.perf_counter()
    model = HRNet.from_config(cfg).eval()
    macs = count_macs(model, model.input_size)
    print(f"built {config}: {count_parameters(model):,} parameters, {macs['flops'] / 1e9:.2f} GFLOP "
          f"per {model.input_size[0]}x{model.input_size[1]} image ({time.perf_counter() - t0:.1f} s)")

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"{config}.pth"
    torch.save(model.state_dict(), ckpt)
    reloaded = HRNet.from_config(cfg).eval()
    reloaded.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True), strict=True)
    print(f"checkpoint {ckpt} ({ckpt.stat().st_size / 2**20:.1f} MiB) reloaded with strict=True")

    path, box = first_person()
    w, h = model.input_size
    center, scale = box_to_center_scale(box, w / h)
    crop, _ = crop_person(read_image_rgb(path), center, scale, (w, h))
    x = to_tensor(crop)[None]
    with torch.inference_mode():
        a, b = model(x), reloaded(x)
    same = torch.equal(a, b)
    print(f"real COCO crop {path.name} box {[round(v, 1) for v in box]} -> input {tuple(x.shape)} "
          f"-> heatmaps {tuple(a.shape)}; reloaded model gives identical heatmaps: {same}")
    if not same:
        raise RuntimeError("reloaded checkpoint gives different heatmaps")

    r = inference_throughput(model, batch, model.input_size, "cpu", warmup=1, iters=3)
    print(f"CPU inference, batch {batch}, fp32 eager: {r['images_per_s']:.1f} images/s "
          f"({torch.get_num_threads()} threads)")
    return 0
