"""COCO loader on the real coco-mini data, augmentation geometry, bad input, the synthetic set."""
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import COCO_MINI

from hrfast.data.coco import Augmentation, COCOKeypoints, flip_joints, half_body_box
from hrfast.data.coco_meta import FLIP_PAIRS, flip_permutation
from hrfast.data.synthetic import make_synthetic_coco, render_image
from hrfast.data.transforms import IMAGENET_MEAN, IMAGENET_STD

ANN = COCO_MINI / "annotations" / "person_keypoints.json"
DETS = COCO_MINI / "annotations" / "person_detections.json"
IMAGES = COCO_MINI / "images"


def test_coco_mini_ground_truth_boxes():
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = COCOKeypoints(ANN, IMAGES, (192, 256), (48, 64))
    gt = json.loads(ANN.read_text())["annotations"]
    usable = [a for a in gt if max(a["keypoints"][2::3]) > 0 and not a["iscrowd"]]
    assert len(ds) == len(usable) > 0
    item = ds[0]
    assert item["image"].shape == (3, 256, 192) and item["image"].dtype == torch.float32
    assert item["target"].shape == (17, 64, 48) and item["target_weight"].shape == (17,)
    assert item["joints"].shape == (17, 2)
    # the crop is centred on the box: visible joints land inside the input
    vis = item["joints_vis"] > 0
    j = item["joints"][vis]
    assert ((j[:, 0] > -1) & (j[:, 0] < 192) & (j[:, 1] > -1) & (j[:, 1] < 256)).float().mean() > 0.9


def test_coco_mini_detector_boxes_threshold():
    dets = json.loads(DETS.read_text())
    ds_all = COCOKeypoints(ANN, IMAGES, (192, 256), (48, 64), det_file=DETS)
    ds_thr = COCOKeypoints(ANN, IMAGES, (192, 256), (48, 64), det_file=DETS, image_thre=0.5)
    assert len(ds_all) == len([d for d in dets if d["category_id"] == 1])
    assert len(ds_thr) == len([d for d in dets if d["score"] >= 0.5]) < len(ds_all)
    item = ds_thr[0]
    assert item["score"] >= 0.5 and item["area"] > 0


def _dot_dataset(tmp_path, **kw):
    """One 200x160 black image with a white 5x5 dot at each of 17 joints of one person."""
    g = np.random.default_rng(0)
    joints = np.stack([g.uniform(40, 120, 17), g.uniform(30, 170, 17)], 1)
    img = np.zeros((200, 160, 3), np.uint8)
    for x, y in joints:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), img)
    kps = np.concatenate([np.round(joints), np.full((17, 1), 2)], 1)
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 160, "height": 200}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 8000.0,
                            "bbox": [30, 20, 100, 160], "num_keypoints": 17,
                            "keypoints": kps.reshape(-1).tolist()}],
           "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    return COCOKeypoints(tmp_path / "ann.json", tmp_path / "img", (96, 128), (24, 32), **kw)


def test_augmented_joints_follow_the_image(tmp_path):
    """Draw dots at the joints, augment (scale, rotation, flip, half body), and find every
    transformed joint on a bright pixel of the augmented crop."""
    aug = Augmentation(prob_rotation=1.0, prob_half_body=0.5)
    ds = _dot_dataset(tmp_path, train=True, augmentation=aug)
    checked = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        img = item["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
        bright = img.mean(-1) > 0.5
        for (x, y), v in zip(item["joints"].numpy(), item["joints_vis"].numpy()):
            if v > 0 and 2 <= x < 94 and 2 <= y < 126:
                xi, yi = int(round(x)), int(round(y))
                assert bright[yi - 1:yi + 2, xi - 1:xi + 2].any(), (epoch, x, y)
                checked += 1
    assert checked > 100


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path):
    ds = _dot_dataset(tmp_path, train=True)
    ds.set_epoch(3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"])
    ds.set_epoch(4)
    assert not torch.equal(a["joints"], ds[0]["joints"])


def test_flip_pairs():
    joints = np.arange(34, dtype=np.float32).reshape(17, 2)
    vis = np.arange(17, dtype=np.float32)
    fj, fv = flip_joints(joints, vis, width=100)
    for a, b in FLIP_PAIRS:
        assert fv[a] == vis[b] and fv[b] == vis[a]
        assert fj[a, 0] == 100 - joints[b, 0] - 1 and fj[a, 1] == joints[b, 1]
    assert fj[0, 0] == 99 - joints[0, 0]
    back, bv = flip_joints(fj, fv, width=100)
    assert np.array_equal(back, joints) and np.array_equal(bv, vis)
    perm = flip_permutation()
    assert sorted(perm) == list(range(17)) and perm[1] == 2 and perm[16] == 15


def test_half_body_box_covers_the_chosen_half():
    g = np.random.default_rng(1)
    joints = np.stack([g.uniform(0, 100, 17), np.linspace(0, 300, 17)], 1).astype(np.float32)
    vis = np.ones(17, np.float32)
    for seed in range(10):
        center, scale = half_body_box(joints, vis, 0.75, np.random.default_rng(seed))
        half = joints[:11] if center[1] < joints[11:, 1].min() else joints[11:]
        assert np.allclose(center, half.mean(0), atol=1e-3)
        w, h = scale * 200
        assert w / h == pytest.approx(0.75, rel=1e-5)
        span = half.max(0) - half.min(0)
        assert w >= span[0] * 1.5 - 1e-3 and h >= span[1] * 1.5 - 1e-3


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="ann_file not found"):
        COCOKeypoints(tmp_path / "nope.json", tmp_path, (96, 128), (24, 32))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a COCO keypoints json"):
        COCOKeypoints(tmp_path / "bad.json", tmp_path, (96, 128), (24, 32))
    # zero-area box and a person without visible joints: skipped with a warning
    doc = {"images": [{"id": 1, "file_name": "missing.jpg", "width": 100, "height": 100}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0, "bbox": [10, 10, 0, 20],
                "num_keypoints": 1, "keypoints": [15, 15, 2] + [0] * 48},
               {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [10, 10, 20, 20],
                "num_keypoints": 0, "keypoints": [0] * 51},
               {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [10, 10, 20, 20],
                "num_keypoints": 1, "keypoints": [15, 15, 2] + [0] * 48}],
           "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning) as rec:   # the missing image is found before any sample is read
        with pytest.raises(FileNotFoundError, match="image file not found: .*missing.jpg"):
            COCOKeypoints(tmp_path / "ann.json", tmp_path, (96, 128), (24, 32))
    msgs = " ".join(str(w.message) for w in rec)
    assert "no visible joints" in msgs and "empty box" in msgs
    cv2.imwrite(str(tmp_path / "missing.jpg"), np.zeros((100, 100, 3), np.uint8))
    with pytest.warns(UserWarning):
        assert len(COCOKeypoints(tmp_path / "ann.json", tmp_path, (96, 128), (24, 32))) == 1


def test_synthetic_is_deterministic_and_coco_loadable(tmp_path):
    a1, p1 = render_image(np.random.default_rng([0, 5]), (128, 128))
    a2, p2 = render_image(np.random.default_rng([0, 5]), (128, 128))
    assert np.array_equal(a1, a2) and p1 == p2
    paths = make_synthetic_coco(tmp_path / "syn", num_train=6, num_val=3, image_size=(160, 160), progress=False)
    stamp = (tmp_path / "syn" / "synthetic.json").stat().st_mtime_ns
    again = make_synthetic_coco(tmp_path / "syn", num_train=6, num_val=3, image_size=(160, 160), progress=False)
    assert again == paths and (tmp_path / "syn" / "synthetic.json").stat().st_mtime_ns == stamp  # reused
    ds = COCOKeypoints(paths["train_ann"], paths["train_images"], (96, 128), (24, 32), train=True)
    assert len(ds) >= 6 and ds[0]["image"].shape == (3, 128, 96)
    doc = json.loads(paths["val_ann"].read_text())
    kps = np.array([a["keypoints"] for a in doc["annotations"]]).reshape(-1, 17, 3)
    assert set(np.unique(kps[..., 2])) <= {0.0, 1.0, 2.0}
    assert all(a["area"] > 0 and a["bbox"][2] > 0 for a in doc["annotations"])
    assert json.loads(paths["val_dets"].read_text())[0]["category_id"] == 1


def test_detector_boxes_exactly_as_the_official_code(tmp_path):
    """Detector boxes are cropped as the official code crops them (issue 14): no clipping, no
    shrink, a zero-score box kept at threshold 0, boxes across the image border untouched."""
    import json

    from official_numpy import person_detections
    ann = COCO_MINI / "annotations" / "person_keypoints.json"
    ids = sorted(json.loads(ann.read_text())["images"], key=lambda i: i["id"])
    im = ids[0]
    dets = [{"image_id": im["id"], "category_id": 1, "bbox": [-20.5, -10.0, 100.0, 240.0], "score": 0.9},
            {"image_id": im["id"], "category_id": 1, "bbox": [im["width"] - 30.0, 5.0, 80.0, 60.0], "score": 0.0},
            {"image_id": im["id"], "category_id": 1, "bbox": [10.3, 20.7, 33.1, 44.9], "score": 0.5},
            {"image_id": im["id"], "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.99}]
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    ds = COCOKeypoints(ann, COCO_MINI / "images", (192, 256), (48, 64), det_file=det_file, image_thre=0.0)
    want = person_detections(dets, 0.0, 192 / 256)
    assert len(ds.records) == len(want) == 3
    for r, (iid, center, scale, score) in zip(ds.records, want):
        assert r["image_id"] == iid and r["score"] == score
        np.testing.assert_array_equal(r["center"], center)
        np.testing.assert_array_equal(r["scale"], scale)
