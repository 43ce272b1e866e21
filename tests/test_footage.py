"""Footage: ONNX person detectors in three layouts, HOG, tracking, batched crops on the
device path, and predict on videos, webcams and frame folders, with their errors."""
import json
import re

import cv2
import numpy as np
import pytest
import torch
from conftest import COCO_MINI, requires_cuda

from hrfast.cli import main
from hrfast.data.keypoints import COCO17
from hrfast.data.synthetic import render_image
from hrfast.data.transforms import crop_person, get_affine_transform, to_tensor, warp_crops
from hrfast.detect import HOGDetector, ONNXDetector, letterbox
from hrfast.detect.base import box_iou, nms_xywh
from hrfast.detect.onnx_detector import guess_layout
from hrfast.tracking import Tracker, boxes_from_keypoints

try:
    import onnxruntime  # noqa: F401
    HAS_ORT = True
except ImportError:
    HAS_ORT = False
# only the cases that run an ONNX detector need it; HOG, tracking, crops and bad footage do not
needs_onnxruntime = pytest.mark.skipif(not HAS_ORT, reason="ONNX detectors need onnxruntime (CI installs it)")

IMAGE_W, IMAGE_H, NET = 200, 100, 64
# the person the tiny detectors report, in image pixels [x, y, w, h]
PERSON = np.array([40.0, 20.0, 60.0, 50.0])


class Constant(torch.nn.Module):
    """A 'detector' whose outputs are fixed tensors (its input only keeps the graph honest)."""

    def __init__(self, *outputs):
        super().__init__()
        for i, o in enumerate(outputs):
            self.register_buffer(f"o{i}", o)
        self.n = len(outputs)

    def forward(self, x):
        z = x.mean() * 0
        return tuple(getattr(self, f"o{i}") + z.to(getattr(self, f"o{i}").dtype) for i in range(self.n))


def _in_input(box, centred):
    """An image box [x, y, w, h] in the letterboxed input's pixels: x1, y1, x2, y2."""
    r = min(NET / IMAGE_W, NET / IMAGE_H)
    oy = (NET - round(IMAGE_H * r)) // 2 if centred else 0
    x, y, w, h = box
    return np.array([x * r, y * r + oy, (x + w) * r, (y + h) * r + oy])


def _yolox():
    """84 anchors (8x8 + 4x4 + 2x2 cells of a 64x64 input), 2 classes: the person at one
    stride-8 anchor, a dog at another, a faint person elsewhere."""
    out = np.zeros((84, 7), np.float32)
    x1, y1, x2, y2 = _in_input(PERSON, False)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    gx, gy = int(cx // 8), int(cy // 8)
    out[gy * 8 + gx] = [cx / 8 - gx, cy / 8 - gy, np.log(w / 8), np.log(h / 8), 0.9, 0.95, 0.01]
    out[gy * 8 + gx + 1] = [cx / 8 - gx - 1, cy / 8 - gy, np.log(w / 8), np.log(h / 8), 0.8, 0.9, 0.0]  # duplicate
    out[70] = [0.5, 0.5, 0.0, 0.0, 0.9, 0.02, 0.97]                                                  # a dog
    out[30] = [0.5, 0.5, 0.0, 0.0, 0.2, 0.5, 0.0]                                                    # faint
    return (torch.from_numpy(out)[None],)


def _yolov8():
    x1, y1, x2, y2 = _in_input(PERSON, True)
    rows = np.zeros((10, 6), np.float32)
    rows[0] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.93, 0.0]
    rows[1] = [(x1 + x2) / 2 + 1, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.7, 0.0]    # duplicate, lower score
    rows[2] = [10, 10, 8, 8, 0.0, 0.99]                                        # another class
    return (torch.from_numpy(rows.T.copy())[None],)


def _rtmdet():
    x1, y1, x2, y2 = _in_input(PERSON, False)
    dets = np.array([[x1, y1, x2, y2, 0.91], [1, 1, 9, 9, 0.95], [x1, y1, x2, y2, 0.1]], np.float32)
    return torch.from_numpy(dets)[None], torch.tensor([[0, 3, 0]], dtype=torch.int64)


def export(tmp_path, outputs, name):
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(Constant(*outputs), (torch.zeros(1, 3, NET, NET),), str(path), dynamo=False,
                      input_names=["images"])
    return path


@needs_onnxruntime
@pytest.mark.parametrize("layout,make", [("yolox", _yolox), ("yolov8", _yolov8), ("rtmdet", _rtmdet)])
def test_each_onnx_layout_gives_the_known_person(tmp_path, layout, make):
    path = export(tmp_path, make(), layout)
    image = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    for given in (layout, "auto"):                     # named, and told by the output shapes
        det = ONNXDetector(path, layout=given, score_threshold=0.3)
        assert det.layout == layout
        boxes = det(image)
        # one person: the other class, the faint one and the duplicate are gone
        assert boxes.shape == (1, 5), boxes
        np.testing.assert_allclose(boxes[0, :4], PERSON, atol=1e-3)


@needs_onnxruntime
def test_an_unknown_layout_names_the_shapes(tmp_path):
    path = export(tmp_path, (torch.zeros(1, 7, 7),), "square")
    with pytest.raises(ValueError, match=re.escape("outputs [(1, 7, 7)] match no known layout")):
        ONNXDetector(path)
    assert main(["predict", str(COCO_MINI / "images" / sorted(p.name for p in (COCO_MINI / "images").iterdir())[0]),
                 "--config", "w18_small_128x96", "--detector", str(path), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match="match no known layout"):
        guess_layout([(1, 10)])


def test_letterbox_and_nms():
    img = np.full((100, 200, 3), 7, np.uint8)
    out, r, (ox, oy) = letterbox(img, (64, 64), centred=True)
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.32) and (ox, oy) == (0, 16)
    assert (out[:16] == 114).all() and (out[16:48] == 7).all()
    kept = nms_xywh(np.array([[0, 0, 10, 10, 0.5], [1, 0, 10, 10, 0.9], [50, 50, 5, 5, 0.1]]), 0.5)
    assert kept[:, 4].tolist() == [0.9, 0.1]


def test_hog_finds_an_annotated_person():
    if not hasattr(cv2, "HOGDescriptor"):
        pytest.fail("OpenCV without HOGDescriptor: hrfast needs opencv-python-headless < 5 (pyproject.toml)")
    ann = json.loads((COCO_MINI / "annotations" / "person_keypoints.json").read_text())
    det, best = HOGDetector(score_threshold=0.0), 0.0
    for im in ann["images"]:
        image = cv2.cvtColor(cv2.imread(str(COCO_MINI / "images" / im["file_name"])), cv2.COLOR_BGR2RGB)
        gt = np.array([a["bbox"] for a in ann["annotations"] if a["image_id"] == im["id"]]).reshape(-1, 4)
        found = det(image)
        if len(found) and len(gt):
            best = max(best, box_iou(found[:, :4], gt).max())
    assert best > 0.3, best


def _figure(center, height, t):
    """A (17, 3) standing pose of ``height`` px at ``center``, arms swinging with ``t``."""
    rel = np.array([[0, -0.45], [-0.03, -0.47], [0.03, -0.47], [-0.06, -0.45], [0.06, -0.45], [-0.12, -0.3],
                    [0.12, -0.3], [-0.16, -0.1 + 0.02 * np.sin(t)], [0.16, -0.1], [-0.18, 0.05], [0.18, 0.05],
                    [-0.08, 0.05], [0.08, 0.05], [-0.09, 0.27], [0.09, 0.27], [-0.1, 0.5], [0.1, 0.5]])
    return np.concatenate([rel * height + np.asarray(center), np.full((17, 1), 0.9)], 1)


def test_tracks_stay_on_two_figures_that_cross():
    tracker, rng = Tracker(), np.random.default_rng(0)
    seen = {"a": set(), "b": set()}
    for t in range(60):       # 2.7 px a frame: 3-5% of their heights, a brisk walk at 25 fps
        a = _figure((20 + 2.7 * t, 60), 80, t) + np.r_[rng.normal(0, 1, (17, 2)).T, [np.zeros(17)]].T
        b = _figure((180 - 2.7 * t, 70), 60, t) + np.r_[rng.normal(0, 1, (17, 2)).T, [np.zeros(17)]].T
        people = [a, b] if t % 2 else [b, a]          # the detector's order changes from frame to frame
        ids = tracker.update(np.stack(people), boxes_from_keypoints(np.stack(people))[:, :4])
        got = dict(zip(["a", "b"] if t % 2 else ["b", "a"], ids))
        seen["a"].add(got["a"])
        seen["b"].add(got["b"])
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1 and seen["a"] != seen["b"], seen


def test_tracks_end_after_missed_frames_and_new_people_get_new_ids():
    tracker = Tracker(max_missed=2)
    p = _figure((50, 50), 60, 0)[None]
    assert tracker.update(p) == [0]
    for _ in range(3):
        tracker.update(np.zeros((0, 17, 3)))
    assert tracker.tracks == []                       # gone after 3 > 2 missed frames
    assert tracker.update(p) == [1]


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_crops_equal_opencv_crops(device):
    """The batched grid_sample crops (the CUDA path; on the CPU too) match warpAffine's."""
    rng = np.random.default_rng(0)
    image = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    jobs = [((60.0, 45.0), np.array([0.5, 0.66])), ((10.0, 80.0), np.array([0.3, 0.4])),
            ((100.5, 20.25), np.array([0.2, 0.27]))]
    mats = np.stack([get_affine_transform(c, s, 0.0, (48, 64)) for c, s in jobs])
    got = warp_crops(torch.from_numpy(image).to(device), mats, (48, 64)).cpu()
    ref = torch.stack([to_tensor(crop_person(image, c, s, (48, 64))[0]) for c, s in jobs])
    level = 1 / 255 / 0.225          # one intensity level, normalized
    # OpenCV rounds its bilinear weights to 1/32: a few levels at most, under one on average
    assert (got - ref).abs().max() < 4 * level and (got - ref).abs().mean() < 0.5 * level


def _clip(path, frames=9, size=(160, 120)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert w.isOpened()
    for i in range(frames):
        img, _ = render_image(np.random.default_rng(i), size)
        w.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    w.release()
    return path


@needs_onnxruntime
def test_video_round_trip(tmp_path, capsys):
    """predict on a video: as many frames written as read, one JSON line per frame, people
    with track ids, and each stage's share printed."""
    clip = _clip(tmp_path / "clip.mp4")
    det = export(tmp_path, _yolov8(), "yolov8")
    out = tmp_path / "out"
    assert main(["predict", str(clip), "--config", "w18_small_128x96", "--detector", str(det), "--out", str(out),
                 "--detect-every", "3", "--batch-frames", "2", "--quiet", "--no-flip"]) == 0
    text = capsys.readouterr().out
    assert "9 frames" in text and "time by stage: read" in text and "network" in text
    lines = [json.loads(s) for s in (out / "clip_pose.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(9))
    assert all(p["track_id"] >= 0 and len(p["keypoints"]) == 17 for r in lines for p in r["people"])
    assert len(lines[0]["people"]) == 1                 # the detector's one person
    cap, n = cv2.VideoCapture(str(out / "clip_pose.mp4")), 0
    while cap.read()[0]:
        n += 1
    assert n == 9


@needs_onnxruntime
def test_a_folder_of_frames_is_footage(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), render_image(np.random.default_rng(i), (96, 80))[0])
    det = export(tmp_path, _rtmdet(), "rtmdet")
    assert main(["predict", str(frames), "--config", "w18_small_128x96", "--detector", str(det), "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0
    assert len((tmp_path / "o" / "frames_pose.jsonl").read_text().splitlines()) == 3


def _bad_inputs(tmp_path):
    (tmp_path / "junk.mp4").write_text("this is not a video")
    empty = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48)).release()
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    cv2.imwrite(str(sizes / "0.png"), np.zeros((60, 80, 3), np.uint8))
    cv2.imwrite(str(sizes / "1.png"), np.zeros((48, 64, 3), np.uint8))
    return {"junk": (tmp_path / "junk.mp4", "junk.mp4"), "empty": (empty, "empty.mp4"),
            "webcam": ("97", "webcam 97 is not there"),
            "sizes": (sizes, "frame 1 is 64x48, but the stream started at 80x60"),
            "missing": (tmp_path / "nothing.mp4", "video not found")}


@pytest.mark.parametrize("case", ["junk", "empty", "webcam", "sizes", "missing"])
def test_bad_footage_is_one_line(tmp_path, capsys, case):
    source, message = _bad_inputs(tmp_path)[case]
    assert main(["predict", str(source), "--config", "w18_small_128x96", "--detector", "hog", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hrfast: error:") and message in err[-1], err


class _TemplatePoses:
    """A stand-in for a perfect top-down pose network: in each box it finds the figure nearest
    the box's centre (the person a crop is centred on, as in training), by colour, and
    returns a standing pose that fills that figure."""
    keypoints, num_joints = COCO17, 17

    def estimate(self, frames, boxes, timer=None):
        return [np.stack([self._pose(f, b) for b in np.asarray(bs, np.float64).reshape(-1, 4)])
                if len(bs) else np.zeros((0, 17, 3)) for f, bs in zip(frames, boxes)]

    @staticmethod
    def _pose(frame, box):
        centre = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
        figures = []
        for mask in (frame[..., 0] > 150) & (frame[..., 1] < 100), (frame[..., 1] > 150) & (frame[..., 0] < 100):
            ys, xs = np.nonzero(mask)
            if len(xs) > 10:
                figures.append((np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2]),
                                ys.max() - ys.min() + 1))
        if not figures:
            return np.zeros((17, 3))
        c, height = min(figures, key=lambda f: np.linalg.norm(f[0] - centre))
        return _figure(c, height, 0)


def _colour_boxes(frame):
    """The red and the green figure of the crossing clip, found by colour, in alternating order."""
    boxes = []
    for mask in (frame[..., 0] > 150) & (frame[..., 1] < 100), (frame[..., 1] > 150) & (frame[..., 0] < 100):
        ys, xs = np.nonzero(mask)
        if len(xs) > 20:
            boxes.append([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, 0.9])
    _colour_boxes.calls = getattr(_colour_boxes, "calls", 0) + 1
    return np.array(boxes[::-1] if _colour_boxes.calls % 2 else boxes, np.float64).reshape(-1, 5)


def test_track_ids_stay_on_two_figures_crossing_in_a_clip(tmp_path):
    """A clip of two figures that walk across each other, through run_video with detection
    every third frame and propagated boxes in between: each figure keeps one track id."""
    from hrfast.video import run_video
    path, frames = tmp_path / "cross.mp4", 60
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (240, 120))
    for t in range(frames):
        # red walks right, green walks left, each 3 px a frame: a tenth of its width, a brisk
        # walk at 25 frames a second
        img = np.zeros((120, 240, 3), np.uint8)
        a, b = round(30 + 3 * t), round(210 - 3 * t)
        cv2.rectangle(img, (a - 15, 20), (a + 15, 100), (0, 0, 230), -1)     # BGR: red
        cv2.rectangle(img, (b - 13, 35), (b + 13, 105), (0, 230, 0), -1)     # green, in front
        writer.write(img)
    writer.release()
    r = run_video(path, _TemplatePoses(), _colour_boxes, tmp_path / "out", detect_every=3, batch_frames=2,
                  progress=False)
    ids = {"red": set(), "green": set()}
    for line in r["jsonl"].read_text().splitlines():
        for person in json.loads(line)["people"]:
            # whose pose it is: red's nose is near y = 24, green's near y = 38
            ids["red" if person["keypoints"][0][1] < 31 else "green"].add(person["track_id"])
    assert len(ids["red"]) == 1 and len(ids["green"]) == 1 and ids["red"] != ids["green"], ids
    assert r["frames"] == frames


@requires_cuda
def test_pose_estimator_on_cuda_equals_the_cpu():
    """On CUDA the crops are one grid_sample per image and the network runs on the GPU: the
    keypoints match the CPU path's (fp32; the crops differ by OpenCV's 1/32 weight rounding)."""
    from hrfast import HRNet, PoseEstimator
    torch.manual_seed(0)
    model = HRNet.from_config("w18_small_128x96").eval()
    image = cv2.cvtColor(cv2.imread(str(sorted((COCO_MINI / "images").glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    boxes = [[10, 10, 120, 200], [100, 40, 80, 160]]
    cpu = PoseEstimator(model, method="dark")(image, boxes)
    gpu = PoseEstimator(model, device="cuda", method="dark")(image, boxes)
    # random weights give flat maps whose argmax can flip: bound the median joint's distance
    assert np.median(np.linalg.norm(cpu[..., :2] - gpu[..., :2], axis=-1)) < 1.0
