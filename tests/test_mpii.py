"""MPII: the official layout, samples as the official loader makes them, PCKh against a
transcription of the official evaluation, the official experiment file, and the CLI end to
end on the synthetic MPII data."""
import json
import re

import numpy as np
import pytest
import torch
from official_numpy import mpii_pckh

from hrfast import HRNet, load_config
from hrfast.cli import main
from hrfast.config import ConfigError, merge_config
from hrfast.data.mpii import MAT_NAMES, MPII16, MPIIKeypoints, mpii_paths
from hrfast.data.synthetic import make_synthetic_mpii
from hrfast.engine.pckh import load_ground_truth, pckh

pytest.importorskip("scipy", reason="MPII needs scipy (the dev extra installs it)")

OFFICIAL_YAML = "tests/data/official_style_mpii_w32.yaml"


@pytest.fixture(scope="module")
def mpii(tmp_path_factory):
    return make_synthetic_mpii(tmp_path_factory.mktemp("mpii"), num_train=16, num_val=12, image_size=(128, 128),
                               progress=False)


def _raw_gt(path):
    from scipy.io import loadmat
    m = loadmat(str(path))
    return m["dataset_joints"], m["jnt_missing"], m["pos_gt_src"], m["headboxes_src"]


def _official(preds, path):
    return {k: float(v) for k, v in mpii_pckh(preds, *_raw_gt(path)).items()}


def _gt_preds(gt):
    return gt["positions"].transpose(2, 0, 1) - 1.0          # (N, 16, 2), 0-based


def test_perfect_predictions_score_100(mpii):
    gt = load_ground_truth(mpii["gt"])
    got = pckh(_gt_preds(gt), gt)
    assert all(v == pytest.approx(100.0) for v in got.values()), got
    assert got == pytest.approx(_official(_gt_preds(gt), mpii["gt"]))


def test_predictions_off_by_six_tenths_of_a_head_score_0(mpii):
    gt = load_ground_truth(mpii["gt"])
    head = np.linalg.norm(gt["head_boxes"][1] - gt["head_boxes"][0], axis=0)     # (N,) box diagonals
    preds = _gt_preds(gt).copy()
    preds[..., 0] += (0.6 * 0.6 * head * 1.01)[:, None]     # 0.6 head sizes (head size = 0.6 x diagonal)
    got = pckh(preds, gt)
    assert all(v == 0.0 for v in got.values()), got
    assert got == pytest.approx(_official(preds, mpii["gt"]))


def test_a_mixed_case_equals_the_official_evaluation(mpii):
    gt = load_ground_truth(mpii["gt"])
    rng = np.random.default_rng(0)
    head = np.linalg.norm(gt["head_boxes"][1] - gt["head_boxes"][0], axis=0) * 0.6
    preds = _gt_preds(gt) + rng.normal(size=(head.size, 16, 2)) * head[:, None, None] * 0.3
    got = pckh(preds, gt)
    assert 5 < got["Mean"] < 95 and got["Mean@0.1"] < got["Mean"]       # neither extreme
    assert got == pytest.approx(_official(preds, mpii["gt"]), abs=1e-9)


def test_samples_follow_the_official_loader(mpii):
    ds = MPIIKeypoints(mpii["train_ann"], mpii["images"], (128, 128), (32, 32))
    raw = json.loads(mpii["train_ann"].read_text())[0]
    rec = ds.records[0]
    s = raw["scale"]
    # center: down by 15 x scale, then 1-based -> 0-based; scale x1.25; joints 0-based
    np.testing.assert_allclose(rec["center"], [raw["center"][0] - 1, raw["center"][1] + 15 * s - 1], rtol=1e-6)
    np.testing.assert_allclose(rec["scale"], [1.25 * s] * 2, rtol=1e-6)
    np.testing.assert_allclose(rec["joints"], np.asarray(raw["joints"]) - 1, rtol=1e-6)
    assert ds.keypoints is MPII16 and ds.flip_pairs == ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
    assert ds[0]["target"].shape == (16, 32, 32)
    assert tuple(MAT_NAMES[j] for j in (9, 12, 13)) == ("head", "rsho", "lsho")


@pytest.mark.parametrize("make,message", [
    (lambda p, tmp: MPIIKeypoints(tmp / "annot" / "train.json", p["images"], (64, 64), (16, 16)),
     "MPII annotation file not found"),
    (lambda p, tmp: MPIIKeypoints(p["train_ann"], p["images"], (64, 64), (16, 16), num_joints=17),
     "MODEL.NUM_JOINTS is 17 but MPII has 16 keypoints"),
    (lambda p, tmp: load_ground_truth(tmp / "gt_valid.mat"), "MPII ground truth not found"),
    (lambda p, tmp: merge_config(load_config(OFFICIAL_YAML), {"DATASET": {"DATASET": "lsp"}}),
     "DATASET.DATASET must be one of coco, coco-wholebody, mpii"),
])
def test_bad_inputs_are_named(mpii, tmp_path, make, message):
    with pytest.raises((FileNotFoundError, ValueError, ConfigError), match=re.escape(message)):
        make(mpii, tmp_path)


def test_the_official_experiment_file_loads_unchanged_and_trains(mpii, tmp_path, monkeypatch, capsys):
    """The official MPII W32 experiment, as it is, takes training steps on the MPII layout,
    starting from its ImageNet checkpoint (MODEL.PRETRAINED) as the official code does."""
    from hrfast.engine.data import build_dataset, make_loader
    from hrfast.engine.train import build_run, train_one_epoch
    cfg = load_config(OFFICIAL_YAML)
    assert (cfg.DATASET.DATASET, cfg.MODEL.NUM_JOINTS, list(cfg.MODEL.IMAGE_SIZE)) == ("mpii", 16, [256, 256])
    assert mpii_paths(cfg.DATASET.ROOT, cfg.DATASET.TEST_SET)["gt"].as_posix() == "data/mpii/annot/gt_valid.mat"
    # only where the data lives and how much of it a CPU test can afford change
    cfg = merge_config(cfg, {"DATASET": {"ROOT": str(mpii["root"])}, "TRAIN": {"BATCH_SIZE_PER_GPU": 2},
                             "WORKERS": 0})
    monkeypatch.chdir(tmp_path)          # MODEL.PRETRAINED is relative, as in the official repository
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAINED not found: models/pytorch/imagenet/hrnet_w32"):
        build_run(cfg, tmp_path, "cpu")
    imagenet = tmp_path / cfg.MODEL.PRETRAINED
    imagenet.parent.mkdir(parents=True)
    backbone = {k: v for k, v in HRNet.from_config(cfg).state_dict().items() if not k.startswith("final_layer")}
    torch.save({**backbone, "classifier.weight": torch.zeros(1000, 2048)}, imagenet)   # the classification layout
    run = build_run(cfg, tmp_path, "cpu")
    assert "loaded" in capsys.readouterr().out
    # CPU training runs BN + residual + ReLU on hrfast::bn_act, in the stem and every block
    assert all(m.norm_act_impl is not None for m in run.model.modules() if hasattr(m, "norm_act_impl"))
    ds = build_dataset(run.settings.data, train=True)
    row = train_one_epoch(run, make_loader(ds, 2, True, 0, 1, 0, 0), 0, progress=False, max_steps=2)
    assert np.isfinite(row["loss"]) and row["loss"] > 0
    assert build_dataset(run.settings.data, train=False).gt_file == mpii["gt"]


def test_cli_trains_and_evaluates_mpii_with_a_pckh_table(tmp_path, capsys):
    common = ["--config", "w18_small_128x96", "--synthetic", "--dataset", "mpii", "--out", str(tmp_path),
              "--batch", "8", "--workers", "0", "--quiet", "--device", "cpu"]
    assert main(["train", *common, "--epochs", "1", "--set", "HRFAST.MAX_TRAIN_IMAGES=32"]) == 0
    out = capsys.readouterr().out
    assert "| Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean | Mean@0.1 |" in out
    assert "best PCKh" in out
    assert json.loads((tmp_path / "keypoint_set.json").read_text())["names"][9] == "head_top"
    assert main(["eval", *common, "--checkpoint", str(tmp_path / "model_best.pth")]) == 0
    assert "| Head | Shoulder |" in capsys.readouterr().out
