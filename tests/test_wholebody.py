"""COCO-WholeBody: the 133-keypoint set, the annotation format, the per-part evaluation against
hand-computed OKS, the synthetic data, and train / eval / predict through the CLI."""
import json

import numpy as np
import pytest

from hrfast.cli import main
from hrfast.data.coco import COCOKeypoints
from hrfast.data.keypoints import KeypointSet
from hrfast.data.synthetic import make_synthetic_coco
from hrfast.data.synthetic_wholebody import _face_template
from hrfast.data.wholebody import (
    NUM_WHOLEBODY,
    PARTS,
    WHOLEBODY133,
    flatten_wholebody,
    is_wholebody,
    split_parts,
    tracking_joints,
)
from hrfast.engine.wholebody import format_wholebody, wholebody_eval


def test_the_set_has_five_parts_in_mmpose_order():
    ks = WHOLEBODY133
    assert ks.num_joints == NUM_WHOLEBODY == 133 and len(set(ks.names)) == 133
    assert [(p[2], p[3]) for p in PARTS.values()] == [(0, 17), (17, 6), (23, 68), (91, 21), (112, 21)]
    # a few sigmas from COCO-WholeBody's myeval_wholebody.py: nose, left big toe, face-0, each hand's root
    assert [ks.sigmas[i] for i in (0, 17, 23, 91, 112)] == [0.026, 0.068, 0.042, 0.029, 0.029]
    assert (ks.names[17], ks.names[91], ks.names[132]) == ("left_big_toe", "left_hand_root", "right_pinky_finger4")


def test_flip_pairs_are_an_involution_that_swaps_sides():
    pairs = WHOLEBODY133.flip_pairs
    flat = [j for p in pairs for j in p]
    assert len(flat) == len(set(flat))                       # each joint in one pair at most
    for a, b in pairs:
        na, nb = WHOLEBODY133.names[a], WHOLEBODY133.names[b]
        if not na.startswith("face"):
            assert na.replace("left", "right") == nb, (na, nb)
    # iBUG-68's well-known mirrors: the outer eye corners, the mouth corners, the jaw ends
    for a, b in ((36, 45), (48, 54), (0, 16), (31, 35)):
        assert (23 + a, 23 + b) in pairs


def test_face_pairs_mirror_the_face_geometry():
    """Each face pair sits at mirrored places of a frontal face; the unpaired points are on
    the midline (the template is independent of the pair list)."""
    tpl = _face_template(0.0)
    paired = set()
    for a, b in WHOLEBODY133.flip_pairs:
        if a >= 23 and b < 91:
            (ua, va), (ub, vb) = tpl[a - 23], tpl[b - 23]
            assert abs(ua + ub) < 1e-9 and abs(va - vb) < 1e-9, (a - 23, b - 23)
            paired |= {a - 23, b - 23}
    assert all(abs(tpl[i, 0]) < 1e-9 for i in range(68) if i not in paired)


def person(offset=0.0, face_valid=True, area=10000.0):
    """A COCO-WholeBody annotation: every keypoint labelled, on a grid, shifted by ``offset``."""
    xy = np.stack([np.arange(133) % 12 * 8.0 + 10 + offset, np.arange(133) // 12 * 9.0 + 10], 1)
    flat = np.c_[xy, np.full(133, 2.0)].reshape(-1).tolist()
    ann = {"area": area, "bbox": [offset, 0, 120, 130], "iscrowd": 0, "category_id": 1, "num_keypoints": 17,
           **split_parts(flat), "foot_valid": True, "face_valid": face_valid, "lefthand_valid": True,
           "righthand_valid": True}
    return ann


def test_flatten_and_split_keep_the_parts_and_respect_valid_flags():
    a, b = person(), person(face_valid=False)
    data = {"images": [{"id": 1}], "annotations": [dict(a, id=1, image_id=1), dict(b, id=2, image_id=1)],
            "categories": [{"id": 1, "keypoints": ["nose"] * 17}]}
    assert is_wholebody(data)
    flat = flatten_wholebody(json.loads(json.dumps(data)))
    ka, kb = (np.array(x["keypoints"]).reshape(133, 3) for x in flat["annotations"])
    assert (ka[:, 2] == 2).all() and flat["annotations"][0]["num_keypoints"] == 133
    assert (kb[23:91] == 0).all() and (kb[:23, 2] == 2).all() and flat["annotations"][1]["num_keypoints"] == 65
    assert len(flat["categories"][0]["keypoints"]) == 133
    assert split_parts(ka.reshape(-1).tolist())["face_kpts"] == a["face_kpts"]
    with pytest.raises(ValueError, match="399 values"):
        split_parts([0.0] * 51)


def oks(gt, dt, sigmas, area):
    """COCO's OKS, written out: mean over the labelled joints of exp(-d^2 / (2 area (2 sigma)^2))."""
    g, d = np.asarray(gt).reshape(-1, 3), np.asarray(dt).reshape(-1, 3)
    lab = g[:, 2] > 0
    d2 = ((g[:, :2] - d[:, :2]) ** 2).sum(1)
    e = d2 / ((2 * np.asarray(sigmas)) ** 2) / (area + np.spacing(1)) / 2
    return float(np.exp(-e[lab]).mean())


def test_per_part_ap_against_hand_computed_oks(tmp_path):
    """Person A's face is off by 1.5 px; person B's face is marked invalid. The face row scores
    A alone (B's face result falls in B's ignored ground truth, as pycocotools and xtcocotools
    treat a person with no labelled keypoint of the part); the other parts are exact; the whole
    body ranks B first (score 1.0) and A second."""
    a, b = person(), person(offset=400.0, face_valid=False)          # far apart: no cross matches
    ann = tmp_path / "wb.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "width": 600, "height": 200, "file_name": "x.jpg"}],
                               "annotations": [dict(a, id=1, image_id=1), dict(b, id=2, image_id=1)],
                               "categories": [{"id": 1, "name": "person", "keypoints": ["k"] * 17}]}))
    flat_a, flat_b = (np.array(sum((p[f] for f, *_ in PARTS.values()), []), dtype=float).reshape(133, 3)
                      for p in (a, b))
    moved = flat_a.copy()
    moved[23:91, 0] += 1.5
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "keypoints": moved.reshape(-1).tolist()},
               {"image_id": 1, "category_id": 1, "score": 1.0, "keypoints": flat_b.reshape(-1).tolist()}]
    stats = wholebody_eval(ann, results, tmp_path / "results.json")
    thresholds = np.linspace(0.5, 0.95, 10)
    face_oks = oks(flat_a[23:91], moved[23:91], WHOLEBODY133.sigmas[23:91], 10000.0)
    assert 0.5 < face_oks < 0.95                                    # the case is not trivial
    assert stats["face AP"] == pytest.approx(np.mean(face_oks >= thresholds), abs=1e-12)
    for part in ("body", "foot", "left hand", "right hand"):
        assert stats[f"{part} AP"] == pytest.approx(1.0)
    # whole body: B matches at every threshold; A where its OKS reaches it, else a false positive
    # after B's true positive: precision 1 up to recall 0.5, the 51 of COCO's 101 recall points
    wb_oks = oks(flat_a, moved, WHOLEBODY133.sigmas, 10000.0)
    expected = np.mean([1.0 if wb_oks >= t else 51 / 101 for t in thresholds])
    assert stats["AP"] == pytest.approx(expected, abs=1e-12)
    written = json.loads((tmp_path / "results.json").read_text())
    assert set(written[0]) == {"image_id", "category_id", "score", "keypoints", "foot_kpts", "face_kpts",
                               "lefthand_kpts", "righthand_kpts"} and len(written[0]["face_kpts"]) == 204
    table = format_wholebody(stats).splitlines()
    assert [r.split("|")[1].strip() for r in table[2:]] == ["body", "foot", "face", "left hand", "right hand",
                                                            "whole body"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("wb"), num_train=16, num_val=6, image_size=(192, 192),
                               progress=False, keypoints=133)


def test_synthetic_wholebody_is_in_the_official_format(synthetic):
    assert synthetic["val_ann"].name == "coco_wholebody_val_v1.0.json"
    data = json.loads(synthetic["val_ann"].read_text())
    assert is_wholebody(data) and len(data["categories"][0]["keypoints"]) == 17     # as the official files
    valid_face = 0
    for a in data["annotations"]:
        face = np.array(a["face_kpts"]).reshape(68, 3)
        if not a["face_valid"]:
            assert (face == 0).all() and a["face_box"] == [0.0, 0.0, 0.0, 0.0]
            continue
        valid_face += 1
        x, y, w, h = a["face_box"]
        lab = face[face[:, 2] > 0]
        assert (lab[:, 0] >= x).all() and (lab[:, 0] <= x + w).all() and (lab[:, 1] >= y).all()
    assert valid_face > 0
    ds = COCOKeypoints(synthetic["train_ann"], synthetic["train_images"], (96, 128), (24, 32), train=True,
                       num_joints=133)
    assert ds.wholebody and ds.keypoints is WHOLEBODY133
    sample = ds[0]
    assert sample["target"].shape == (133, 32, 24) and sample["target_weight"].shape[0] == 133


def test_tracking_compares_bodies_only():
    assert tracking_joints(WHOLEBODY133) == slice(0, 17)
    assert tracking_joints(KeypointSet.unnamed(5)) == slice(0, 5)


def test_train_eval_predict_through_the_cli(tmp_path, capsys):
    """hrfast train --dataset coco-wholebody --synthetic trains, eval prints the six rows, and
    predict writes 133 keypoints and draws them with no --keypoints (the checkpoint says 133)."""
    out = tmp_path / "run"
    common = ["--config", "w18_small_128x96", "--dataset", "coco-wholebody", "--synthetic", "--out", str(out),
              "--batch", "8", "--workers", "0", "--quiet", "--device", "cpu"]
    assert main(["train", *common, "--epochs", "1", "--set", "HRFAST.MAX_TRAIN_IMAGES=16"]) == 0
    assert "| whole body |" in capsys.readouterr().out
    assert KeypointSet.load(out / "keypoint_set.json") == WHOLEBODY133
    assert main(["eval", *common, "--checkpoint", str(out / "model_best.pth")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["body", "foot", "face", "left hand", "right hand",
                                                          "whole body"]
    image = sorted((out / "data" / "k133" / "images" / "val").glob("*.jpg"))[0]
    pred = tmp_path / "pred"
    assert main(["predict", str(image), "--config", "w18_small_128x96", "--checkpoint",
                 str(out / "model_best.pth"), "--out", str(pred)]) == 0
    assert "a COCO-WholeBody model" in capsys.readouterr().out
    record = json.loads((pred / "keypoints.json").read_text())[0]
    assert np.array(record["keypoints"]).shape[1:] == (133, 3)
    assert (pred / f"{image.stem}_pose.png").stat().st_size > 1000


def test_a_whole_body_tracker_follows_bodies_whatever_the_hands_do():
    """Two people, two frames: the bodies barely move, every face and hand point jumps by 15 px
    (beyond the face's tiny sigmas). The tracker keeps both ids, matching by the body's OKS."""
    from hrfast.tracking import Tracker
    rng = np.random.default_rng(0)
    people = []
    for x0 in (40.0, 220.0):
        xy = np.c_[x0 + rng.uniform(0, 60, 133), rng.uniform(20, 200, 133)]
        people.append(np.c_[xy, np.ones(133)])
    first = np.stack(people)
    second = first.copy()
    second[:, :17, :2] += 1.0
    second[:, 17:, :2] += rng.choice([-15.0, 15.0], size=(2, 116, 2))
    tracker = Tracker(WHOLEBODY133, iou_threshold=1.01)         # by pose alone: no box fallback
    ids = tracker.update(first)
    assert tracker.update(second[::-1]) == ids[::-1]
