"""Pose estimation on footage: a video file, a webcam or a folder of frames.

:class:`FrameSource` reads RGB frames with OpenCV. :func:`run_video` detects people every
``detect_every`` frames (and sooner when a track is lost); the frames in between take their
boxes from the previous frame's keypoints, as SimpleBaseline's tracker does. The crops of a
few frames go through the network together (``PoseEstimator.estimate``), a
:class:`~hrfast.tracking.Tracker` gives each person a track id, and the output is an
annotated mp4 and one JSON line per frame. The time of each stage is measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Union

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .data.transforms import read_image_rgb
from .detect.base import Detector
from .ops.nms import oks_nms
from .outputs import VideoFile, atomic_path, check_output_dir, json_text
from .predictor import PoseEstimator
from .timing import StageTimer
from .tracking import Tracker, boxes_from_keypoints
from .visualize import draw_skeleton

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def is_footage(source: str) -> bool:
    """A webcam index, a folder, or a file with a video suffix."""
    return str(source).isdigit() or Path(source).is_dir() or Path(source).suffix.lower() in VIDEO_SUFFIXES


class FrameSource:
    """RGB frames (H, W, 3) uint8 of ``source``: a video file, a webcam index ("0") or a
    folder of image files (sorted by name). Every frame must have the first one's size."""

    def __init__(self, source: Union[str, int]):
        self.source = str(source)
        self.fps = 25.0
        self._files: Optional[List[Path]] = None
        self._cap = None
        if self.source.isdigit():
            self._cap = cv2.VideoCapture(int(self.source))
            if not self._cap.isOpened():
                raise ValueError(f"webcam {self.source} is not there (no camera opens at that index)")
        elif Path(self.source).is_dir():
            self._files = sorted(p for p in Path(self.source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise ValueError(f"frame folder {self.source} holds no image files "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            if not Path(self.source).is_file():
                raise FileNotFoundError(f"video not found: {self.source}")
            self._cap = cv2.VideoCapture(self.source)
            if not self._cap.isOpened():
                raise ValueError(f"video {self.source} cannot be read (not a video OpenCV can decode)")
        if self._cap is not None:
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0
        self.size = None

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        for frame in self._frames():
            h, w = frame.shape[:2]
            if self.size is None:
                self.size = (w, h)
            elif (w, h) != self.size:
                raise ValueError(f"{self.source}: frame {count} is {w}x{h}, but the stream started at "
                                 f"{self.size[0]}x{self.size[1]} (the frame size must not change)")
            count += 1
            yield frame
        if count == 0:
            raise ValueError(f"video {self.source} holds no frames")

    def _frames(self) -> Iterator[np.ndarray]:
        if self._files is not None:
            for path in self._files:
                yield read_image_rgb(path)
            return
        try:
            while True:
                ok, frame = self._cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            self._cap.release()


_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40)]


def track_color(track_id: int):
    return _PALETTE[track_id % len(_PALETTE)]


def draw_tracks(frame: np.ndarray, keypoints: np.ndarray, ids: List[int], boxes: np.ndarray,
                estimator: PoseEstimator, threshold: float) -> np.ndarray:
    """The frame with each person's skeleton, and its box and id in the track's colour."""
    out = draw_skeleton(frame, keypoints, threshold, keypoint_set=estimator.keypoints)
    for tid, box in zip(ids, boxes):
        x, y, w, h = (int(round(v)) for v in box[:4])
        color = track_color(tid)
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        cv2.putText(out, str(tid), (x + 2, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return out


def run_video(source, estimator: PoseEstimator, detector: Detector, out_dir, detect_every: int = 5,
              batch_frames: int = 4, threshold: float = 0.2, progress: bool = True,
              tracker: Optional[Tracker] = None, sync: Optional[Callable[[], None]] = None) -> Dict:
    """Keypoints and track ids of every frame of ``source`` (see :class:`FrameSource`).

    Writes ``<out_dir>/<name>_pose.mp4`` (the annotated frames) and ``<name>_pose.jsonl`` (per
    frame: ``frame``, and per person ``track_id``, ``box`` [x, y, w, h], ``keypoints`` (K x
    [x, y, score]) and ``score``). Returns the paths, the frame and people counts and the
    seconds per stage (read, detect, crop, network, decode, track, draw)."""
    if detect_every < 1 or batch_frames < 1:
        raise ValueError(f"detect_every and batch_frames must be at least 1, got {detect_every}, {batch_frames}")
    frames = FrameSource(source)
    out_dir = check_output_dir(out_dir)
    name = "webcam" + frames.source if frames.source.isdigit() else Path(frames.source).stem
    run = _Footage(estimator, detector, tracker or Tracker(estimator.keypoints), StageTimer(sync), detect_every,
                   threshold, out_dir / f"{name}_pose.mp4", frames.fps)
    lines_path = out_dir / f"{name}_pose.jsonl"
    bar = tqdm(desc="frames", unit="frame", disable=not progress)
    # both outputs appear together when the run ends whole; a failed run leaves the old ones
    try:
        with atomic_path(lines_path) as tmp, open(tmp, "w") as lines:
            _stream(frames, run, lines, batch_frames, bar)
            lines.flush()
            if run.writer is not None:
                run.writer.close()
    except BaseException:
        if run.writer is not None:
            run.writer.abort()
        raise
    finally:
        bar.close()
    return {"video": run.video_path, "jsonl": lines_path, "frames": run.frames, "people": run.people,
            "frames_without_people": run.frames_without_people,
            "seconds": dict(run.timer.seconds), "timer": run.timer}


def _stream(frames, run: "_Footage", lines, batch_frames: int, bar) -> None:
    """Frames in batches of ``batch_frames`` through ``run``."""
    chunk: List[np.ndarray] = []
    stream = iter(frames)
    while True:
        with run.timer("read"):
            frame = next(stream, None)
        if frame is not None:
            chunk.append(frame)
        if chunk and (frame is None or len(chunk) == batch_frames):
            run.process(chunk, lines)
            bar.update(len(chunk))
            chunk = []
        if frame is None:
            return


def _distinct_people(keypoints: np.ndarray, boxes: np.ndarray, keypoint_set):
    """One pose per person: propagated boxes of people who meet can converge on the same
    person, whose duplicate poses the official OKS NMS (threshold 0.9) removes."""
    if len(keypoints) < 2:
        return keypoints, boxes
    scores = keypoints[:, :, 2].mean(1)
    areas = boxes[:, 2] * boxes[:, 3]
    keep = oks_nms(torch.from_numpy(np.ascontiguousarray(keypoints, np.float64)), scores, areas, 0.9,
                   torch.tensor(keypoint_set.sigmas, dtype=torch.float64)).numpy()
    keep = np.sort(keep)
    return keypoints[keep], boxes[keep]


@dataclass
class _Footage:
    """What :func:`run_video` carries from frame to frame: the boxes for the next frames, when
    to detect, the tracker, the video writer and the counts."""
    estimator: PoseEstimator
    detector: Detector
    tracker: Tracker
    timer: StageTimer
    detect_every: int
    threshold: float
    video_path: Path
    fps: float
    writer: Optional[VideoFile] = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))    # for frames without detection
    since: int = 0          # frames since the last detection
    lost: bool = True       # a track went missing: detect at the next frame
    frames: int = 0
    people: int = 0
    frames_without_people: int = 0

    def process(self, chunk: List[np.ndarray], lines) -> None:
        """Boxes, keypoints, tracks, drawing and output of a few consecutive frames; they share
        the newest boxes known before the network runs."""
        boxes = [self._boxes(frame) for frame in chunk]
        keypoints = self.estimator.estimate(chunk, [b[:, :4] for b in boxes], self.timer)
        for frame, kp, b in zip(chunk, keypoints, boxes):
            with self.timer("track"):
                kp, b = _distinct_people(kp, b, self.estimator.keypoints)
                ids = self.tracker.update(kp, b[:, :4])
                self.boxes = boxes_from_keypoints(kp, self.threshold)
                self.lost = len(self.boxes) < len(kp) or any(t.missed for t in self.tracker.tracks)
            with self.timer("draw"):
                self._write(frame, kp, ids, b, lines)
            self.frames += 1
            self.people += len(kp)
            self.frames_without_people += len(kp) == 0

    def _boxes(self, frame: np.ndarray) -> np.ndarray:
        if self.since >= self.detect_every or self.lost:
            with self.timer("detect"):
                self.boxes = np.asarray(self.detector(frame), np.float64).reshape(-1, 5)
            self.since, self.lost = 0, False
        self.since += 1
        return self.boxes

    def _write(self, frame, kp, ids, boxes, lines) -> None:
        drawn = draw_tracks(frame, kp, ids, boxes, self.estimator, self.threshold)
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = VideoFile(self.video_path, self.fps, (w, h))
        self.writer.write(drawn)
        people = [{"track_id": int(t), "box": [round(float(v), 2) for v in bb[:4]],
                   "keypoints": [[round(float(v), 2) for v in j] for j in p],
                   "score": round(float(p[:, 2].mean()), 4)} for t, bb, p in zip(ids, boxes, kp)]
        lines.write(json_text({"frame": self.frames, "people": people}, "the JSON lines") + "\n")
