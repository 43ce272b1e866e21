"""PoseEstimator and the predict / eval / train commands on real and synthetic images."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import COCO_MINI

from hrfast import HRNet
from hrfast.cli import main
from hrfast.data.transforms import box_to_center_scale
from hrfast.predictor import PoseEstimator, load_image

IMAGES = sorted((COCO_MINI / "images").glob("*.jpg"))
DETS = COCO_MINI / "annotations" / "person_detections.json"


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return HRNet.from_config("w18_small_128x96").eval()


def test_pose_estimator_on_coco_mini_with_detector_boxes(small_model, tmp_path):
    dets = json.loads(DETS.read_text())
    # quarter decoding stays on the heatmap grid, so the bound below is exact; DARK's Newton step
    # on random-weight maps is unbounded
    est = PoseEstimator(small_model, flip_test=True, method="quarter")
    for path in IMAGES:
        iid = int(path.stem)
        boxes = np.array([d["bbox"] for d in dets if d["image_id"] == iid and d["score"] > 0.5])
        kp = est(path, boxes)
        img = load_image(path)
        assert kp.shape == (len(boxes), 17, 3) and kp.dtype == np.float32
        # keypoints are in original-image pixels, inside the (aspect-padded, 1.25x) crop of their box
        for b, p in zip(boxes, kp):
            c, s = box_to_center_scale(b, 192 / 256)
            half = s * 200 / 2 + 1e-3
            assert (np.abs(p[:, :2] - c) <= half).all()
        out = est.draw(path, kp, tmp_path / f"{path.stem}.png")
        assert out.shape == img.shape and (tmp_path / f"{path.stem}.png").stat().st_size > 1000


def test_pose_estimator_inputs(small_model):
    img = load_image(IMAGES[0])
    est = PoseEstimator(small_model, flip_test=False)
    whole = est(img)                                        # no boxes: the whole image
    assert whole.shape == (1, 17, 3)
    t = torch.from_numpy(img).permute(2, 0, 1)
    assert np.allclose(est(t), whole)                       # uint8 tensor, same result
    assert est(img, np.zeros((0, 4))).shape == (0, 17, 3)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        est(img, [1, 2, 3])
    with pytest.raises(ValueError, match="positive width and height"):
        est(img, [[0, 0, 0, 10]])
    with pytest.raises(ValueError, match=r"image array must be \(H, W, 3\) uint8"):
        est(np.zeros((10, 10), np.uint8))
    with pytest.raises(FileNotFoundError, match="image file not found"):
        est("/nope.jpg")


def test_cli_predict_with_random_weights_on_coco_mini(tmp_path, capsys, small_model):
    ck = tmp_path / "w.pth"
    torch.save(small_model.state_dict(), ck)
    args = ["predict", "--config", "w18_small_128x96", "--checkpoint", str(ck), "--boxes", str(DETS),
            "--out", str(tmp_path / "pred"), *map(str, IMAGES)]
    assert main(args) == 0
    rec = json.loads((tmp_path / "pred" / "keypoints.json").read_text())
    assert [r["file_name"] for r in rec] == [p.name for p in IMAGES]
    assert all(np.array(r["keypoints"]).shape[1:] == (17, 3) for r in rec)
    assert len(list((tmp_path / "pred").glob("*_pose.png"))) == len(IMAGES)


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_cli_predict_optimized_gives_the_eager_keypoints(tmp_path, capsys, small_model, runtime):
    """predict --optimize: the same people and, within bf16 drift, the same keypoints as eager."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="openvino not installed (CI installs it)")
    ck = tmp_path / "w.pth"
    torch.save(small_model.state_dict(), ck)
    common = ["predict", "--config", "w18_small_128x96", "--checkpoint", str(ck), "--boxes", str(DETS),
              str(IMAGES[0])]
    assert main(common + ["--out", str(tmp_path / "eager")]) == 0
    assert main(common + ["--out", str(tmp_path / "fast"), "--optimize", runtime]) == 0
    assert "hrfast.optimize" in capsys.readouterr().out          # the choices are reported
    a, b = (np.array(json.loads((tmp_path / d / "keypoints.json").read_text())[0]["keypoints"])
            for d in ("eager", "fast"))
    assert a.shape == b.shape and a.shape[1:] == (17, 3)
    # bf16 where the CPU has it. Random weights give flat maps whose argmax can flip (one joint
    # of 17 moved 76 image px when this was written), so the median bounds it: 2 image px is
    # well under one heatmap px of these crops (1 heatmap px = 4-10 image px)
    assert np.median(np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)) < 2.0


def test_pose_estimator_optimize_argument(small_model):
    from hrfast.deploy import OptimizedModel
    est = PoseEstimator(small_model, method="quarter", optimize="torch")
    assert isinstance(est.model, OptimizedModel) and est.input_size == small_model.input_size
    img = load_image(IMAGES[0])
    assert est(img, [[10, 10, 100, 200]]).shape == (1, 17, 3)
    with pytest.raises(ValueError, match="runtime must be one of 'auto', 'torch'"):
        PoseEstimator(small_model, optimize="fast")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--config", "w18_small_128x96", "/nope/a.jpg"]) == 2
    assert capsys.readouterr().err.strip() == "hrfast: error: image file not found: /nope/a.jpg"
    assert main(["predict", "--config", "w18_small_128x96", "--checkpoint", str(tmp_path / "x.pth"),
                 str(IMAGES[0])]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    assert main(["predict", "--config", "w18_small_128x96", "--checkpoint", str(bad), str(IMAGES[0])]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert main(["train", "--config", "w18_small_128x96", "--data", str(tmp_path / "none")]) == 2
    assert "--data folder not found" in capsys.readouterr().err
    assert main(["train", "--config", "w18_small_128x96", "--set", "TRAIN.LRR=1"]) == 2
    assert "unknown config key 'TRAIN.LRR'" in capsys.readouterr().err


def test_cli_train_then_eval_on_synthetic(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--config", "w18_small_128x96", "--synthetic", "--out", str(out), "--workers", "0", "--quiet",
              "--set", "MODEL.IMAGE_SIZE=[64,64]", "--set", "MODEL.HEATMAP_SIZE=[16,16]"]
    assert main(["train", *common, "--epochs", "1", "--batch", "16",
                 "--set", "HRFAST.MAX_TRAIN_IMAGES=32"]) == 0
    assert "best AP" in capsys.readouterr().out
    assert main(["eval", *common, "--checkpoint", str(out / "checkpoint.pth"), "--decode", "udp"]) == 0
    eager = capsys.readouterr().out
    assert "| AP |" in eager
    assert (out / "results.json").is_file()
    # the optimized network scores what eager scores, up to bf16 drift (AP row, first cell);
    # one runtime shows the CLI's --optimize plumbing (the torch path's compile, a minute here,
    # is test_optimize.py's)
    ap = lambda text: float(text.split("| AP |")[1].splitlines()[2].split("|")[1])  # noqa: E731
    for runtime in ["openvino" if importlib.util.find_spec("openvino") else "torch"]:
        assert main(["eval", *common, "--checkpoint", str(out / "checkpoint.pth"), "--decode", "udp",
                     "--optimize", runtime]) == 0
        fast = capsys.readouterr().out
        assert "hrfast.optimize" in fast and abs(ap(fast) - ap(eager)) < 0.05, (runtime, ap(fast), ap(eager))


def test_boxes_edge_cases(small_model, tmp_path, capsys):
    """Zero people is an answer (with the model's K); non-finite boxes, wrong shapes, an --out
    that is a file and a missing CUDA device are one-line errors; drawings never overwrite."""
    est = PoseEstimator(small_model, flip_test=False)
    img = load_image(IMAGES[0])
    assert est(img, []).shape == (0, small_model.num_joints, 3)
    with pytest.raises(ValueError, match=r"box 1 must be finite"):
        est(img, [[10, 10, 50, 80], [float("nan"), 0, 10, 10]])
    with pytest.raises(ValueError, match=r"must be \(N, 4\)"):
        est(img, [[1, 2]])
    boxes = tmp_path / "boxes.json"
    name = IMAGES[0].name
    boxes.write_text(json.dumps({name: []}))
    out = tmp_path / "out"
    assert main(["predict", "--config", "w18_small_128x96", "--boxes", str(boxes), "--out", str(out),
                 "--no-flip", str(IMAGES[0])]) == 0
    record = json.loads((out / "keypoints.json").read_text())[0]
    assert record["boxes"] == [] and record["keypoints"] == []
    boxes.write_text(json.dumps({name: [[0, 0, "wide", 3]]}))
    assert main(["predict", "--config", "w18_small_128x96", "--boxes", str(boxes), str(IMAGES[0])]) == 2
    boxes.write_text(json.dumps([{"image_id": 1, "box": [0, 0, 1, 1]}]))
    assert main(["predict", "--config", "w18_small_128x96", "--boxes", str(boxes), str(IMAGES[0])]) == 2
    assert "every detection needs a 'bbox'" in capsys.readouterr().err
    assert main(["predict", "--config", "w18_small_128x96", "--out", str(boxes), str(IMAGES[0])]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["predict", "--config", "w18_small_128x96", "--device", "cuda", str(IMAGES[0])]) == 2
        assert capsys.readouterr().err.strip() == ("hrfast: error: --device cuda: this machine has no CUDA "
                                                  "device (use --device cpu)")
    # the same file name in two folders: two drawings
    twin = tmp_path / "other" / name
    twin.parent.mkdir()
    twin.write_bytes(IMAGES[0].read_bytes())
    assert main(["predict", "--config", "w18_small_128x96", "--out", str(out), "--no-flip",
                 str(IMAGES[0]), str(twin)]) == 0
    assert (out / f"{IMAGES[0].stem}_pose.png").is_file() and (out / f"{IMAGES[0].stem}_2_pose.png").is_file()


def test_truncated_images_are_refused_before_any_output(tmp_path, capsys):
    cut = tmp_path / "cut.jpg"
    data = IMAGES[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is truncated: its JPEG data ends before the end-of-image marker"):
        load_image(cut)
    out = tmp_path / "out"
    assert main(["predict", "--config", "w18_small_128x96", "--out", str(out), str(IMAGES[0]), str(cut)]) == 2
    assert "cut.jpg is truncated" in capsys.readouterr().err
    assert not out.exists()      # nothing written for the good image either
    assert load_image(IMAGES[0]).shape[2] == 3


def test_crops_are_made_a_batch_at_a_time(small_model, monkeypatch):
    """Memory is bounded by the batch: the first forward runs after batch_size crops, not N."""
    import hrfast.predictor as P
    made, seen = [0], []
    crop, infer = P.crop_person, P.infer_heatmaps
    monkeypatch.setattr(P, "crop_person", lambda *a, **k: (made.__setitem__(0, made[0] + 1), crop(*a, **k))[1])
    monkeypatch.setattr(P, "infer_heatmaps", lambda *a, **k: (seen.append(made[0]), infer(*a, **k))[1])
    est = PoseEstimator(small_model, flip_test=False, batch_size=2)
    kp = est(load_image(IMAGES[0]), [[10, 10, 60, 120]] * 5)
    assert kp.shape[0] == 5 and seen == [2, 4, 5]


def test_flip_pairs_come_from_the_dataset_or_the_caller():
    """A 5-keypoint model flip-tests with its own pairs; COCO's 17 pairs are refused for it."""
    m = HRNet.from_config("w18_small_128x96", num_joints=5).eval()
    with pytest.raises(ValueError, match="beyond the model's 5"):
        PoseEstimator(m)
    est = PoseEstimator(m, flip_pairs=[(1, 2), (3, 4)])
    assert est(load_image(IMAGES[0]), [[10, 10, 60, 120]]).shape == (1, 5, 3)
    assert PoseEstimator(m, flip_test=False)(load_image(IMAGES[0]), []).shape == (0, 5, 3)
