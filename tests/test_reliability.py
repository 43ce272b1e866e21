"""Hostile input and hostile conditions: every case is one clear line (the file or key named)
or a defined result, no exit 0 with a missing or partial output, and a failed run leaves the
previous outputs as they were."""
import json
import math
import os
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import COCO_MINI

from hrfast import HRNet
from hrfast.cli import main
from hrfast.data.coco import COCOKeypoints
from hrfast.outputs import OutputError, Staged, VideoFile, atomic_path, json_text, write_png

IMAGES = sorted((COCO_MINI / "images").glob("*.jpg"))
ANN = COCO_MINI / "annotations" / "person_keypoints.json"
SMALL = ["--config", "w18_small_128x96"]


def one_line(capsys, code, expected_code=2):
    """The command's stderr, checked to be exactly one `hrfast: error:` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) >= 1, (code, err)
    assert err[-1].startswith("hrfast: error: "), err
    assert not any(line.startswith("Traceback") for line in err), err
    return err[-1]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w18.pth"
    torch.save(HRNet.from_config("w18_small_128x96").state_dict(), path)
    return path


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs the right to mount, which CI's root has)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}): the full-disk case needs one")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up to ``leave`` bytes."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        size = (disk / "ballast").stat().st_size
        os.truncate(disk / "ballast", max(0, size - leave))


# ---------------------------------------------------------------- 1. outputs whole or not at all

def test_full_disk_predict_fails_with_one_line_and_keeps_the_previous_outputs(tiny_disk, small_weights, capsys):
    out = tiny_disk / "out"
    args = ["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(small_weights), "--out", str(out), "--no-flip"]
    assert main(args) == 0
    before = snapshot(out)
    fill(tiny_disk, leave=8192)          # room for the --out check, not for a PNG
    line = one_line(capsys, main(args))
    assert "No space left on device" in line and str(out) in line
    assert snapshot(out) == before and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_full_disk_video_is_refused_not_left_unplayable(tiny_disk, tmp_path):
    video = VideoFile(tiny_disk / "clip.mp4", 10, (320, 240))
    fill(tiny_disk)
    rng = np.random.default_rng(0)
    with pytest.raises(OutputError, match="cannot write .*clip.mp4"):
        for _ in range(30):
            video.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
        video.close()
    assert not (tiny_disk / "clip.mp4").exists()


def test_a_folder_in_the_way_of_a_png_is_one_line(tmp_path, small_weights, capsys):
    out = tmp_path / "out"
    (out / f"{IMAGES[0].stem}_pose.png").mkdir(parents=True)
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(small_weights),
                                  "--out", str(out), "--no-flip"]))
    assert "a folder of that name is in the way" in line and "_pose.png" in line
    assert not (out / "keypoints.json").exists()


def test_a_footage_run_that_fails_midway_keeps_the_good_earlier_outputs(tmp_path, small_weights, capsys):
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((160, 128, 3), 40 + i, np.uint8))
    out = tmp_path / "out"
    args = ["predict", str(frames), *SMALL, "--checkpoint", str(small_weights), "--out", str(out), "--quiet",
            "--no-flip", "--optimize", "torch"]
    assert main(args) == 0
    before = snapshot(out)
    assert len(before["clip_pose.jsonl"].splitlines()) == 12
    cv2.imwrite(str(frames / "005.png"), np.zeros((64, 64, 3), np.uint8))     # breaks the stream at frame 5
    line = one_line(capsys, main(args))
    assert "frame 5 is 64x64" in line
    assert snapshot(out) == before and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    (tmp_path / "a.json").write_text("old")
    with pytest.raises(RuntimeError):
        with Staged() as s:
            s.json(tmp_path / "a.json", {"new": 1})
            s.png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
            raise RuntimeError("killed halfway")
    assert (tmp_path / "a.json").read_text() == "old" and not (tmp_path / "b.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_path(tmp_path / "c.txt") as tmp:
        tmp.write_text("whole")
    assert (tmp_path / "c.txt").read_text() == "whole"
    write_png(tmp_path / "d.png", np.zeros((4, 4, 3), np.uint8))
    assert cv2.imread(str(tmp_path / "d.png")).shape == (4, 4, 3)


# ---------------------------------------------------------------- 2. checked before the work

def bad_annotations(tmp_path, change) -> Path:
    data = json.loads(ANN.read_text())
    change(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def first_ann(data):
    return next(a for a in data["annotations"] if a["num_keypoints"] > 0)


ANNOTATION_CASES = {
    "short keypoints": (lambda d: first_ann(d).update(keypoints=first_ann(d)["keypoints"][:-3]),
                        "'keypoints' must hold 3 x 17 = 51 numbers"),
    "no bbox": (lambda d: first_ann(d).pop("bbox"), "has no 'bbox'"),
    "no area": (lambda d: first_ann(d).pop("area"), "has no 'area'"),
    "NaN keypoint": (lambda d: first_ann(d)["keypoints"].__setitem__(0, float("nan")),
                     "'keypoints' holds a non-finite value"),
    "inf box": (lambda d: first_ann(d)["bbox"].__setitem__(2, float("inf")), "'bbox' holds a non-finite value"),
    "no categories": (lambda d: d.update(categories=[]), "'categories' is empty"),
}


@pytest.mark.parametrize("case", sorted(ANNOTATION_CASES))
def test_bad_annotations_name_the_file_the_annotation_and_the_field(tmp_path, case):
    change, message = ANNOTATION_CASES[case]
    path = bad_annotations(tmp_path, change)
    with pytest.raises(ValueError) as exc:
        COCOKeypoints(path, COCO_MINI / "images", (96, 128), (24, 32))
    assert message in str(exc.value) and str(path) in str(exc.value)
    if case != "no categories":
        data = json.loads(ANN.read_text())
        assert f"annotation {first_ann(data)['id']}" in str(exc.value)


def test_eval_refuses_a_bad_annotation_before_any_inference(tmp_path, small_weights, capsys, monkeypatch):
    import hrfast.cli
    path = bad_annotations(tmp_path, ANNOTATION_CASES["short keypoints"][0])
    monkeypatch.setattr(hrfast.engine.evaluate, "evaluate", lambda *a, **k: pytest.fail("inference ran"))
    line = one_line(capsys, main(["eval", *SMALL, "--checkpoint", str(small_weights), "--set",
                                  f"DATASET.TEST_ANN={path}", "--set", f"DATASET.TEST_IMAGES={COCO_MINI / 'images'}",
                                  "--out", str(tmp_path / "e"), "--quiet"]))
    assert "must hold 3 x 17 = 51 numbers" in line


@pytest.mark.parametrize("where", ["file", "folder in the way"])
def test_eval_out_that_cannot_be_written_fails_before_the_evaluation(tmp_path, small_weights, capsys, monkeypatch,
                                                                      where):
    import hrfast.cli
    monkeypatch.setattr(hrfast.engine.evaluate, "evaluate", lambda *a, **k: pytest.fail("inference ran"))
    out = tmp_path / "e"
    if where == "file":
        out.write_text("a file")
    else:
        (out / "results.json").mkdir(parents=True)
    line = one_line(capsys, main(["eval", *SMALL, "--checkpoint", str(small_weights), "--set",
                                  f"DATASET.TEST_ANN={ANN}", "--set", f"DATASET.TEST_IMAGES={COCO_MINI / 'images'}",
                                  "--out", str(out), "--quiet"]))
    assert str(out) in line


def test_a_read_only_out_fails_before_any_work(tmp_path, small_weights, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if r.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("root writes through permissions, and no read-only tmpfs can be mounted here")
        ro.chmod(0o500)
    try:
        line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(small_weights),
                                      "--out", str(ro / "sub")]))
        assert "is not writable" in line and str(ro) in line
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


# ---------------------------------------------------------------- 3. checkpoints people have

def test_the_official_training_checkpoint_and_module_prefixes_load(tmp_path, capsys):
    model = HRNet.from_config("w18_small_128x96")
    state = model.state_dict()
    official = {"epoch": 140, "model": "pose_hrnet", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "perf": 0.74, "optimizer": {"state": {}, "param_groups": []}}
    torch.save(official, tmp_path / "checkpoint.pth")
    assert main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(tmp_path / "checkpoint.pth"),
                 "--out", str(tmp_path / "o"), "--no-flip"]) == 0


def test_a_checkpoint_of_another_width_names_the_config_to_pass(tmp_path, capsys):
    torch.save(HRNet.from_config("w18_small_128x96").state_dict(), tmp_path / "w18.pth")
    line = one_line(capsys, main(["predict", str(IMAGES[0]), "--checkpoint", str(tmp_path / "w18.pth"),
                                  "--out", str(tmp_path / "o")]))
    assert "does not fit the model: missing:" in line and "shape:" in line
    assert "It is a w18_small_128x96 network: pass --config w18_small_128x96" in line


def test_an_mpii_checkpoint_is_recognised_by_predict(tmp_path, capsys):
    from hrfast.config import get_config, merge_config
    cfg = merge_config(get_config("w18_small_128x96"), {"MODEL": {"NUM_JOINTS": 16}})
    torch.save(HRNet.from_config(cfg).state_dict(), tmp_path / "mpii.pth")
    assert main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(tmp_path / "mpii.pth"),
                 "--out", str(tmp_path / "o"), "--no-flip"]) == 0
    assert "predicts 16 joints: an MPII model" in capsys.readouterr().out
    record = json.loads((tmp_path / "o" / "keypoints.json").read_text())[0]
    assert len(record["keypoints"][0]) == 16


def legacy_save(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)


def test_a_bit_flip_in_a_legacy_checkpoint_is_caught(tmp_path, capsys):
    state = HRNet.from_config("w18_small_128x96").state_dict()
    state["conv1.weight"][0, 0, 0, 0] = 1e36            # what a flipped exponent bit does
    legacy_save(state, tmp_path / "flipped.pth")
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(tmp_path / "flipped.pth"),
                                  "--out", str(tmp_path / "o")]))
    assert "is damaged: conv1.weight holds 1e+36" in line
    state = HRNet.from_config("w18_small_128x96").state_dict()
    state["bn1.running_var"][3] = -1.0
    legacy_save(state, tmp_path / "var.pth")
    assert "BN variance <= 0" in one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint",
                                                        str(tmp_path / "var.pth"), "--out", str(tmp_path / "o")]))


def test_a_sound_legacy_checkpoint_loads_with_a_warning(tmp_path):
    from hrfast.weights import read_weights
    legacy_save(HRNet.from_config("w18_small_128x96").state_dict(), tmp_path / "old.pth")
    with pytest.warns(RuntimeWarning, match="legacy .non-zip. file: it has no CRCs"):
        assert len(read_weights(tmp_path / "old.pth")) > 100


@pytest.mark.parametrize("obj, message", [([1, 2, 3], "holds a list, not a state_dict"),
                                          ({"a": 1}, "entry 'a' is a int, not a tensor"),
                                          ({}, "holds an empty dict")])
def test_things_that_are_not_state_dicts_are_one_line(tmp_path, capsys, obj, message):
    torch.save(obj, tmp_path / "x.pth")
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(tmp_path / "x.pth"),
                                  "--out", str(tmp_path / "o")]))
    assert message in line and "x.pth" in line


# ---------------------------------------------------------------- 4. numbers in range

@pytest.mark.parametrize("setting, message", [
    ("TRAIN.LR_FACTOR=-5", "TRAIN.LR_FACTOR must be a decay factor in (0, 1], got -5"),
    ("HRFAST.EMA=2.0", "HRFAST.EMA must be an EMA decay per step in [0, 1)"),
    ("TRAIN.LR=.inf", "TRAIN.LR must be a finite number, got inf"),
    ("TRAIN.LR=.nan", "TRAIN.LR must be a finite number, got nan"),
    ("MODEL.SIGMA=1e6", "MODEL.SIGMA must be a Gaussian sigma in heatmap pixels in (0, 64]"),
    ("MODEL.NUM_JOINTS=-3", "MODEL.NUM_JOINTS must be a keypoint count in 1..1000, got -3"),
    ("TEST.OKS_THRE=1.5", "TEST.OKS_THRE must be an OKS threshold in [0, 1]"),
    ("MODEL.HEATMAP_SIZE=[0,16]", "MODEL.HEATMAP_SIZE must be [width, height]"),
    ("MODEL.EXTRA.STAGE2.NUM_CHANNELS=[18,-36]", "MODEL.EXTRA.STAGE2 counts"),
])
def test_out_of_range_numbers_are_one_line_before_any_work(tmp_path, capsys, setting, message):
    out = tmp_path / "run"
    line = one_line(capsys, main(["train", *SMALL, "--synthetic", "--out", str(out), "--set", setting]))
    assert message in line
    assert not out.exists()


def test_eval_and_predict_honour_the_config_and_say_which_setting_won(tmp_path, small_weights, capsys):
    common = ["--checkpoint", str(small_weights), "--out", str(tmp_path / "o")]
    assert main(["predict", str(IMAGES[0]), *SMALL, *common, "--set", "HRFAST.DECODE=dark",
                 "--set", "TEST.FLIP_TEST=false"]) == 0
    assert "flip test off (TEST.FLIP_TEST), decoding dark (HRFAST.DECODE)" in capsys.readouterr().out
    assert main(["predict", str(IMAGES[0]), *SMALL, *common, "--set", "HRFAST.DECODE=dark", "--decode", "udp"]) == 0
    assert "flip test on (TEST.FLIP_TEST), decoding udp (--decode)" in capsys.readouterr().out
    assert main(["eval", *SMALL, *common, "--set", f"DATASET.TEST_ANN={ANN}", "--set",
                 f"DATASET.TEST_IMAGES={COCO_MINI / 'images'}", "--set", "HRFAST.DECODE=dark", "--no-flip",
                 "--quiet"]) == 0
    assert "flip test off (--no-flip), decoding dark (HRFAST.DECODE)" in capsys.readouterr().out


# ---------------------------------------------------------------- 5. corrupt input refused or flagged

def corrupt_images(tmp_path):
    src = IMAGES[0].read_bytes()
    n = len(src)
    cases = {"zeroed middle": src[:n // 3] + b"\0" * (n // 3) + src[2 * n // 3:],
             "truncated, end marker appended": src[:n // 2] + b"\xff\xd9",
             "empty": b""}
    paths = {}
    for name, data in cases.items():
        paths[name] = tmp_path / f"{name.split()[0].strip(',')}.jpg"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("case, message", [("zeroed middle", "is corrupt: the decoder says"),
                                           ("truncated, end marker appended", "is corrupt: the decoder says"),
                                           ("empty", "is empty (0 bytes)")])
def test_corrupt_images_are_refused_and_nothing_is_written(tmp_path, small_weights, capsys, case, message):
    image = corrupt_images(tmp_path)[case]
    out = tmp_path / "out"
    line = one_line(capsys, main(["predict", str(IMAGES[1]), str(image), *SMALL, "--checkpoint", str(small_weights),
                                  "--out", str(out), "--no-flip"]))
    assert message in line and image.name in line
    assert not out.exists() or not list(out.iterdir())


def test_non_finite_predictions_are_written_as_null_with_a_warning(tmp_path, capsys):
    model = HRNet.from_config("w18_small_128x96")
    state = model.state_dict()
    state["final_layer.bias"][:] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.warns(RuntimeWarning, match="non-finite values .NaN or inf. written as null"):
        assert main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(tmp_path / "nan.pth"),
                     "--out", str(tmp_path / "o"), "--no-flip"]) == 0
    text = (tmp_path / "o" / "keypoints.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert "null" in text
    assert json_text({"a": [1.0, math.inf]}, "x") == '{"a": [1.0, null]}'


def test_boxes_wholly_outside_the_image_are_dropped_with_a_count(tmp_path, small_weights, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({IMAGES[0].name: [[100, 100, 50, 80], [5000, 5000, 40, 40], [-300, 10, 50, 50]]}))
    assert main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(small_weights), "--boxes", str(boxes),
                 "--out", str(tmp_path / "o"), "--no-flip"]) == 0
    assert "dropped 2 boxes that lie wholly outside their image" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "o" / "keypoints.json").read_text())[0]["keypoints"]) == 1


def test_detections_outside_their_image_are_dropped_in_evaluation(tmp_path):
    dets = json.loads((COCO_MINI / "annotations" / "person_detections.json").read_text())
    dets.append({"image_id": 785, "category_id": 1, "bbox": [9000, 9000, 30, 30], "score": 0.99})
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    with pytest.warns(UserWarning, match="dropped 1 detections wholly outside their image"):
        ds = COCOKeypoints(ANN, COCO_MINI / "images", (96, 128), (24, 32), det_file=tmp_path / "dets.json")
    assert len(ds) == len(dets) - 1


# ---------------------------------------------------------------- 6. no tracebacks

def test_malformed_keypoints_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "set.json"
    bad.write_text(json.dumps({"names": ["a", "b"], "skeleton": [[0, 1]]}))
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--keypoints", str(bad),
                                  "--out", str(tmp_path / "o")]))
    assert f"keypoints file {bad} lacks 'sigmas'" in line


@pytest.mark.parametrize("device", ["meta", "mps", "xla"])
def test_devices_hrfast_does_not_run_on_are_one_line(tmp_path, capsys, device):
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--device", device,
                                  "--out", str(tmp_path / "o")]))
    assert f"--device {device}" in line or "--device must be a torch device" in line


def test_ctrl_c_exits_130_with_one_word(tmp_path, capsys, monkeypatch):
    import hrfast.cli

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(hrfast.cli, "_predict_images", interrupt)
    assert main(["predict", str(IMAGES[0]), *SMALL, "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip() == "hrfast: interrupted"


def test_onnxruntime_on_a_bf16_cpu_picks_fp32_itself(tmp_path, small_weights, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["predict", str(IMAGES[0]), *SMALL, "--checkpoint", str(small_weights), "--optimize", "onnxruntime",
                 "--out", str(tmp_path / "o"), "--no-flip"]) == 0
    assert "runtime onnxruntime" in capsys.readouterr().out
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--dtype", "bf16", "--out", str(tmp_path / "o")]))
    assert "--dtype bf16 needs --optimize" in line


def test_triton_backend_on_the_cpu_is_refused_or_says_it_interprets(tmp_path, small_weights, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("with a GPU, --backend triton runs there")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--backend", "triton",
                                  "--out", str(tmp_path / "o")]))
    assert "--backend triton runs the fused kernels on a CUDA GPU" in line
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import hrfast.cli
    monkeypatch.setattr(hrfast.cli, "_predict_images", lambda *a, **k: 0)
    assert main(["predict", str(IMAGES[0]), *SMALL, "--backend", "triton", "--out", str(tmp_path / "o")]) == 0
    assert "runs the kernels in Triton's interpreter" in capsys.readouterr().out


# ---------------------------------------------------------------- 7. a detector that tells the truth

def test_footage_in_which_the_detector_finds_nobody_says_so(tmp_path, small_weights, capsys):
    frames = tmp_path / "dark"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), np.zeros((160, 128, 3), np.uint8))
    assert main(["predict", str(frames), *SMALL, "--checkpoint", str(small_weights), "--out", str(tmp_path / "o"),
                 "--quiet", "--no-flip", "--optimize", "torch"]) == 0
    out = capsys.readouterr().out
    assert "4 frames, 0 people" in out
    assert "note: the detector found no person in 4 of 4 frames: OpenCV's HOG detector" in out and "--boxes" in out


def test_a_drawing_without_confident_joints_says_so(tmp_path):
    from hrfast.visualize import draw_skeleton
    image = np.full((200, 300, 3), 128, np.uint8)
    low = np.zeros((1, 17, 3))
    low[..., :2], low[..., 2] = 100, 0.1
    drawn = draw_skeleton(image, low, threshold=0.2)
    assert (drawn[:10, :40] != 128).any()                 # the caption's band
    sure = low.copy()
    sure[..., 2] = 0.9
    assert (draw_skeleton(image, sure, threshold=0.2)[:10, :40] == 128).all()
    assert (draw_skeleton(image, np.zeros((0, 17, 3))) == image).all()      # nobody: nothing to say



def test_hog_on_a_frame_smaller_than_its_window_finds_nobody_and_does_not_crash():
    from hrfast.detect import HOGDetector
    assert HOGDetector()(np.zeros((96, 128, 3), np.uint8)).shape == (0, 5)     # OpenCV would segfault
    assert HOGDetector()(np.zeros((200, 60, 3), np.uint8)).shape == (0, 5)


@pytest.mark.parametrize("layout", ["auto", "yolox", "yolov8", "rtmdet"])
def test_an_onnx_file_that_is_no_detector_is_one_line_in_any_layout(tmp_path, capsys, layout):
    pytest.importorskip("onnxruntime")
    import hrfast
    onnx = hrfast.export.onnx(HRNet.from_config("w18_small_128x96").eval(), tmp_path / "pose.onnx", check=False)
    line = one_line(capsys, main(["predict", str(IMAGES[0]), *SMALL, "--detector", str(onnx), "--detector-format",
                                  layout, "--out", str(tmp_path / "o")]))
    assert "[(1, 17, 32, 24)]" in line
