"""End-to-end pose estimation on footage: people/s and where the time goes.

Writes a clip of synthetic frames (the generator's figures, 640x480 by default; no video is
committed), then runs ``hrfast.video.run_video`` on it: detection every N frames, boxes
propagated from keypoints in between, crops of a few frames batched through the network
(``hrfast.optimize``'s default runtime unless ``--eager``), decoding, tracking, drawing and the
mp4 + JSON lines output. The detector is, by default, the boxes the generator drew ("truth":
free, so the report is about hrfast's pipeline); ``--detector hog`` or an ``.onnx`` path
times a real one. Prints people/s and each stage's share, and the share of the stages
around the network (read, crop, decode, track, draw), whose goal is at most 30% for W32 on
the CPU.

Usage: python benchmarks/video_pipeline.py [--config w32_256x192] [--frames 40] [--size 640 480]
       [--detect-every 5] [--batch-frames 4] [--detector truth|hog|model.onnx] [--eager] [--report out.md]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import torch

import hrfast
from hrfast.benchmarking import emit_report
from hrfast.data.synthetic import render_image
from hrfast.detect import build_detector
from hrfast.tables import markdown_table
from hrfast.video import run_video

AROUND_NETWORK = ("read", "crop", "decode", "track", "draw")


def write_clip(path: Path, frames: int, size, seed: int = 0) -> List[np.ndarray]:
    """A clip of ``frames`` synthetic frames; returns each frame's person boxes (N, 5)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, tuple(size))
    boxes = []
    for i in range(frames):
        img, anns = render_image(np.random.default_rng([seed, i]), tuple(size))
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        boxes.append(np.array([[*a["bbox"], 1.0] for a in anns]).reshape(-1, 5))
    writer.release()
    return boxes


def _signature(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (8, 8), interpolation=cv2.INTER_AREA).astype(float)


class TruthDetector:
    """The generator's boxes of the frame it is shown (found by an 8x8 thumbnail of the
    decoded clip's frames): a detector that costs next to nothing."""

    def __init__(self, clip: Path, boxes: List[np.ndarray]):
        cap, self.signatures = cv2.VideoCapture(str(clip)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            self.signatures.append(_signature(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        self.boxes = boxes

    def __call__(self, image: np.ndarray) -> np.ndarray:
        sig = _signature(image)
        return self.boxes[int(np.argmin([np.abs(sig - s).sum() for s in self.signatures]))]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="w32_256x192")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", type=int, nargs=2, default=(640, 480))
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--batch-frames", type=int, default=4)
    ap.add_argument("--detector", default="truth")
    ap.add_argument("--eager", action="store_true", help="the network as it is, not through hrfast.optimize")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = hrfast.HRNet.from_config(args.config).eval()
    net = model if args.eager else hrfast.optimize(model, device=args.device)
    est = hrfast.PoseEstimator(net, device=args.device, method="dark", input_size=model.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        truth = write_clip(clip, args.frames, args.size)
        detector = TruthDetector(clip, truth) if args.detector == "truth" else build_detector(args.detector)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
        # warm-up: the runtime compiles on its first calls (per batch size with torch.compile)
        blank = np.zeros((args.size[1], args.size[0], 3), np.uint8)
        for n in sorted({1, len(truth[0]) or 1, est.batch_size}):
            est.estimate([blank], [[[0, 0, 64, 128]] * n])
        t0 = time.perf_counter()
        r = run_video(clip, est, detector, Path(tmp) / "out", args.detect_every, args.batch_frames,
                      progress=False, sync=sync)
        wall = time.perf_counter() - t0
    sec = r["seconds"]
    total = sum(sec.values())
    around = sum(sec.get(k, 0.0) for k in AROUND_NETWORK)
    head = (f"Footage, {args.config}, {args.frames} frames {args.size[0]}x{args.size[1]}, detect every "
            f"{args.detect_every}, {args.batch_frames} frames a batch, detector {args.detector}, "
            f"{'eager' if args.eager else 'hrfast.optimize default'} on {args.device}; torch {torch.__version__}, "
            f"{platform.machine()}, {torch.get_num_threads()} threads.")
    rows = [[k, f"{v:.2f}", f"{v / total:.0%}"] for k, v in sec.items()]
    text = "\n\n".join([
        head,
        f"{r['frames']} frames, {r['people']} people in {wall:.1f} s: {r['people'] / wall:.1f} people/s, "
        f"{r['frames'] / wall:.1f} frames/s. The stages around the network (read, crop, decode, track, draw) "
        f"took {around / total:.0%} of the time (goal: at most 30% for W32 on the CPU).",
        markdown_table(["stage", "seconds", "share"], rows)])
    return emit_report(text, args.report)


if __name__ == "__main__":
    main()
