"""Keypoint sets other than COCO's 17: the description, its derivation from names, the config
keys, the errors, and a 5-keypoint COCO-format set through train, eval, predict and drawing."""
import json

import numpy as np
import pytest
import torch

from hrfast.cli import main
from hrfast.data.coco import COCOKeypoints
from hrfast.data.keypoints import COCO17, UNIFORM_SIGMA, KeypointSet, derive_flip_pairs
from hrfast.data.synthetic import make_synthetic_coco
from hrfast.engine.evaluate import coco_eval
from hrfast.ops.nms import COCO_SIGMAS

FIVE = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """The synthetic 5-keypoint COCO-format set (head, hands, feet)."""
    return make_synthetic_coco(tmp_path_factory.mktemp("k5"), num_train=24, num_val=8, image_size=(128, 128),
                               progress=False, keypoints=5)


def test_coco17_is_the_official_description():
    assert COCO17.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    assert COCO17.upper_body == tuple(range(11)) and COCO17.lower_body == tuple(range(11, 17))
    assert torch.equal(torch.tensor(COCO17.sigmas, dtype=torch.float64), COCO_SIGMAS)
    assert COCO17.joint_weights[9] == 1.5 and (15, 13) in COCO17.skeleton      # 1-based (16, 14)


def test_a_set_is_derived_from_its_names():
    k = KeypointSet.build(FIVE, [(0, 1)])
    assert k.flip_pairs == ((1, 2), (3, 4))                     # left_/right_ partners
    assert k.upper_body == (0, 1, 2) and k.lower_body == (3, 4)   # feet are the lower half
    assert k.sigmas == (UNIFORM_SIGMA,) * 5 and k.joint_weights == (1.0,) * 5
    assert [k.side(j) for j in range(5)] == ["mid", "left", "right", "left", "right"]
    assert derive_flip_pairs(["l_paw", "r_paw", "eye_left", "eye_right", "tail"]) == ((0, 1), (2, 3))
    given = KeypointSet.build(FIVE, flip_pairs=[(1, 2)], sigmas=[0.1] * 5, upper_body=[0])
    assert given.flip_pairs == ((1, 2),) and given.sigmas == (0.1,) * 5 and given.upper_body == (0,)


@pytest.mark.parametrize("known,message", [
    (dict(flip_pairs=[(1, 5)]), r"flip_pairs \[1, 5\] names a joint outside 0..4 \(5 keypoints\)"),
    (dict(sigmas=[0.1] * 4), r"sigmas must hold one value per keypoint \(5\), got 4"),
    (dict(joint_weights=[1, 1, 1, 1, 0]), "joint_weights must be positive"),
    (dict(upper_body=[7]), "upper_body names a joint outside 0..4"),
])
def test_bad_descriptions_are_named(known, message):
    with pytest.raises(ValueError, match=message):
        KeypointSet.build(FIVE, **known)


def test_save_load_and_reading_an_annotation_file(tmp_path, five):
    k = KeypointSet.build(FIVE, [(0, 1), (0, 2)], sigmas=[0.05, 0.1, 0.1, 0.2, 0.2])
    assert KeypointSet.load(k.save(tmp_path / "k.json")) == k
    from_file = KeypointSet.load(five["train_ann"])                  # the category names and skeleton
    assert from_file.names == tuple(FIVE) and from_file.skeleton == ((0, 1), (0, 2), (0, 3), (0, 4))
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="neither a keypoint-set json"):
        KeypointSet.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="keypoints file not found"):
        KeypointSet.load(tmp_path / "missing.json")


def test_the_dataset_reads_its_keypoints_and_checks_the_count(five):
    ds = COCOKeypoints(five["train_ann"], five["train_images"], (96, 128), (24, 32), num_joints=5,
                       use_joint_weights=True, sigmas=[0.05] * 5)
    assert ds.keypoints.names == tuple(FIVE) and ds.flip_pairs == ((1, 2), (3, 4))
    assert ds.keypoints.sigmas == (0.05,) * 5 and ds.joint_weights.shape == (5,)
    item = ds[0]
    assert item["joints"].shape == (5, 2) and item["target"].shape == (5, 32, 24)
    with pytest.raises(ValueError, match="MODEL.NUM_JOINTS is 17 but person_keypoints_train.json category "
                                         "'person' has 5 keypoints: set MODEL.NUM_JOINTS to 5"):
        COCOKeypoints(five["train_ann"], five["train_images"], (96, 128), (24, 32), num_joints=17)


def _people(gt, offset):
    """Results: every ground-truth person, each joint moved ``offset`` pixels right."""
    out = []
    for ann in gt["annotations"]:
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kp[:, 0] += offset
        kp[:, 2] = 1.0
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kp.reshape(-1).tolist(),
                    "score": 1.0})
    return out


def test_cocoeval_scores_with_the_sets_sigmas(five):
    """The same predictions score differently under tight and loose sigmas: COCOeval gets
    the set's sigmas, not COCO's."""
    gt = json.loads(five["val_ann"].read_text())
    results = _people(gt, 3.0)
    tight = coco_eval(five["val_ann"], results, sigmas=[0.02] * 5)["AP"]
    loose = coco_eval(five["val_ann"], results, sigmas=[0.3] * 5)["AP"]
    assert loose > tight + 0.2, (tight, loose)
    assert coco_eval(five["val_ann"], _people(gt, 0.0), sigmas=[0.02] * 5)["AP"] > 0.99


@pytest.mark.parametrize("args,message", [
    (["--set", "DATASET.FLIP_PAIRS=[[1, 17]]"], r"DATASET.FLIP_PAIRS \[1, 17\] names a joint outside 0..16"),
    (["--set", "DATASET.SIGMAS=[0.1, 0.1]"], "DATASET.SIGMAS must hold MODEL.NUM_JOINTS = 17 values, got 2"),
    (["--set", "DATASET.UPPER_BODY=[20]"], "DATASET.UPPER_BODY must list joints in 0..16"),
])
def test_bad_keypoint_config_is_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--config", "w18_small_128x96", "--synthetic", "--out", str(tmp_path), "--quiet"]
                + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hrfast: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_eval_passes_the_sets_sigmas_to_cocoeval(monkeypatch, five):
    """evaluate() hands the dataset's sigmas to OKS NMS and COCOeval, and its category id to
    the results."""
    import hrfast.engine.evaluate as ev
    from hrfast.engine.data import make_loader
    from hrfast.models import HRNet
    seen = {}

    def spy(ann_file, results, results_file=None, sigmas=None):
        seen["sigmas"], seen["category"] = sigmas, {r["category_id"] for r in results}
        return {k: 0.0 for k in ev.STATS_NAMES}
    monkeypatch.setattr(ev, "coco_eval", spy)
    ds = COCOKeypoints(five["val_ann"], five["val_images"], (96, 128), (24, 32), num_joints=5,
                       sigmas=[0.04, 0.05, 0.05, 0.06, 0.06])
    model = HRNet.from_config("w18_small_128x96", num_joints=5)
    ev.evaluate(model, make_loader(ds, 4, False, 0, 1, 0, 0), five["val_ann"], progress=False)
    assert seen["sigmas"] == (0.04, 0.05, 0.05, 0.06, 0.06) and seen["category"] == {1}


def test_five_keypoints_train_eval_predict_and_draw(tmp_path, capsys):
    """A 5-keypoint COCO-format set end to end through the CLI: train (which writes the set),
    eval, and predict with the set (flip test with its pairs, drawing with its skeleton)."""
    out = tmp_path / "run"
    common = ["--config", "w18_small_128x96", "--synthetic", "--synthetic-keypoints", "5", "--out", str(out),
              "--batch", "8", "--workers", "0", "--quiet", "--device", "cpu"]
    assert main(["train", *common, "--epochs", "1", "--set", "HRFAST.MAX_TRAIN_IMAGES=32",
                 "--set", "TRAIN.LR_STEP=[]"]) == 0
    assert "best AP" in capsys.readouterr().out
    kset = KeypointSet.load(out / "keypoint_set.json")
    assert kset.names == tuple(FIVE) and kset.flip_pairs == ((1, 2), (3, 4))
    assert main(["eval", *common, "--checkpoint", str(out / "model_best.pth")]) == 0
    assert "| AP |" in capsys.readouterr().out
    image = sorted((out / "data" / "k5" / "images" / "val").glob("*.jpg"))[0]
    pred = tmp_path / "pred"
    assert main(["predict", str(image), "--config", "w18_small_128x96",     # --keypoints sets the joints
                 "--checkpoint", str(out / "model_best.pth"), "--keypoints", str(out / "keypoint_set.json"),
                 "--out", str(pred)]) == 0
    record = json.loads((pred / "keypoints.json").read_text())[0]
    assert np.array(record["keypoints"]).shape == (1, 5, 3)
    assert (pred / f"{image.stem}_pose.png").stat().st_size > 1000
