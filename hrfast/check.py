"""`hrfast check`: a quick end-to-end check of the model on real data.

``model_check``: build an HRNet, save and reload its checkpoint (strict), run it on a real COCO
person crop of the packaged sample data (``hrfast.samples``), and measure CPU inference
throughput. The checkpoint goes to a temporary folder unless ``out_dir`` names one.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from .benchmarking import inference_throughput
from .config import resolve_config
from .data.transforms import box_to_center_scale, crop_person, read_image_rgb, to_tensor
from .models import HRNet
from .profile import count_macs, count_parameters
from .samples import largest_person


def model_check(config: str = "w32_256x192", batch: int = 8, out_dir: Optional[Path] = None) -> int:
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="hrfast-check-") as tmp:
            return _check(config, batch, Path(tmp))
    return _check(config, batch, Path(out_dir))


def _check(config: str, batch: int, out_dir: Path) -> int:
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

    path, box = largest_person()
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
