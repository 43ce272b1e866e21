"""The face repository's pixel conventions (hrfast.data.face_official) on hand-worked cases, COFW's
MATLAB lists, and both pipelines through train / eval / predict.

Each expected value below is worked out by hand from the formulas in the module docstring
(1-based pixels, h = 200 * scale, whole pixels truncated toward zero), not read off the code."""
import json

import numpy as np
import pytest
import torch
from conftest import write_task_yaml
from PIL import Image

from hrfast.cli import main
from hrfast.data.face_official import (
    bytescale,
    cofw_box,
    decode_official,
    face_transform,
    official_face_crop,
    official_face_targets,
    transform_pixel,
)
from hrfast.data.faces import FaceLandmarks, read_face_list
from hrfast.engine.face import face_settings


def test_transform_pixel_by_hand():
    # h = 200 * 0.04 = 8 image px onto 4 output px around (4, 4): x' = x / 2 (0-based)
    assert transform_pixel((5, 5), (4, 4), 0.04, (4, 4)).tolist() == [3, 3]          # (4, 4) -> (2, 2), 1-based
    assert transform_pixel((0, 0), (4, 4), 0.04, (4, 4), invert=True).tolist() == [-1, -1]   # (-1) * 2 = -2, +1
    assert transform_pixel((4, 4), (4, 4), 0.04, (4, 4), invert=True).tolist() == [7, 7]     # 3 * 2 = 6, +1
    assert transform_pixel((1.9, 1.9), (4, 4), 0.04, (4, 4), invert=True).tolist() == [2, 2]  # 0.9 * 2 = 1.8 -> 1
    # a 90 degree turn about the output centre (2, 2) of a 4 px crop of 4 px: (x, y) -> (y, 4 - x)
    np.testing.assert_allclose(face_transform((2, 2), 0.02, (4, 4), rot=90) @ [1.0, 0.0, 1.0], [0.0, 3.0, 1.0],
                               atol=1e-12)


def test_bytescale_stretches_floats_and_keeps_bytes():
    assert bytescale(np.array([[0.0, 5.0, 10.0]])).tolist() == [[0, 128, 255]]      # 5 * 25.5 = 127.5, + 0.5
    assert bytescale(np.array([[2.0, 3.0]])).tolist() == [[0, 255]]
    assert bytescale(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]            # no span: all at the minimum
    raw = np.array([[3, 200]], np.uint8)
    assert bytescale(raw) is raw


def test_the_crop_is_the_whole_pixel_box_then_byte_resized():
    # h = 200 * 0.03 = 6 onto 4 around (4, 4) (6 / 4 < 2: no shrink): x = 1.5 x' + 1 (0-based),
    # so the corners are -1 -> -0.5 -> 0 (toward zero), + 1 = 1, and 3 -> 5.5 -> 5, + 1 = 6
    img = np.arange(6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3) + 10
    got = official_face_crop(img, (4, 4), 0.03, (4, 4))
    box = img[1:6, 1:6]
    stretched = np.floor((box - box.min()) * 255.0 / (box.max() - box.min()) + 0.5).astype(np.uint8)
    want = np.asarray(Image.fromarray(stretched).resize((4, 4), Image.BILINEAR))
    assert got.dtype == np.uint8 and got.shape == (4, 4, 3)
    np.testing.assert_array_equal(got, want)


def test_outside_the_image_is_zero_before_the_stretch():
    # h = 200 * 0.025 = 5 onto 4 around (1, 1): x = 1.25 x' - 1.5; corners -2.75 -> -2, + 1 = -1
    # and 2.25 -> 2, + 1 = 3: a 4 px box whose first row and column lie outside the image
    img = np.full((6, 6, 3), 100.0, np.float32)
    img[0, 0] = 200.0
    box = np.zeros((4, 4, 3), np.float32)
    box[1:, 1:] = img[:3, :3]
    stretched = np.floor(box * 255.0 / 200.0 + 0.5).astype(np.uint8)       # from the padding's 0
    np.testing.assert_array_equal(official_face_crop(img, (1, 1), 0.025, (4, 4)), stretched)   # 4 -> 4


def test_a_large_face_shrinks_the_whole_image_first():
    # 200 * 0.08 / 4 = 4 >= 2: the 16 px image becomes 4 px, the face (2, 2) at h = 4: corners
    # (0, 0) and (4, 4), the whole shrunk image, resized 4 -> 4 (unchanged)
    img = np.random.default_rng(0).uniform(20, 200, (16, 16, 3)).astype(np.float32)
    small = np.asarray(Image.fromarray(bytescale(img)).resize((4, 4), Image.BILINEAR)).astype(np.float32)
    np.testing.assert_array_equal(official_face_crop(img, (8, 8), 0.08, (4, 4)), bytescale(small))
    assert official_face_crop(img, (8, 8), 2.0, (4, 4)).tolist() == np.zeros((4, 4, 3)).tolist()  # < 2 px left


def test_a_turned_crop_moves_a_pixel_where_the_turn_puts_it():
    # h = 40 onto 40 around (20, 20): corners (0, 0), (40, 40); a 90 degree turn pads by
    # int(40 * sqrt(2) / 2 - 20) = 8, a 56 px box: img[15, 25] sits at box[23, 33], Pillow's
    # 90 degree counter-clockwise turn of a square takes (r, c) to (55 - c, r) = (22, 23), and
    # without the padding that is crop[14, 15]
    img = np.zeros((40, 40, 3), np.float32)
    img[15, 25] = 255.0
    crop = official_face_crop(img, (20, 20), 0.2, (40, 40), rot=90)
    assert crop.shape == (40, 40, 3) and crop[14, 15].tolist() == [255] * 3 and int(crop.sum()) == 3 * 255


def test_training_targets_sit_on_whole_heatmap_pixels():
    # h = 64 onto a 16 px heatmap around (32, 32): x' = x / 4; the point (10, 10) is 1-based
    # (11, 11) -> 2.5 -> 2, + 1, - 1 = 2; a y of 0 has no target
    got = official_face_targets(np.array([[10.0, 10.0], [5.0, 0.0], [63.0, 40.0]]), (32, 32), 0.32, 16)
    assert got.tolist() == [[2.0, 2.0], [-1.0, -1.0], [15.0, 10.0]]


def test_decoding_by_hand():
    hm = torch.zeros(1, 3, 8, 8)
    hm[0, 0, 3, 5] = 1.0                              # 1-based (6, 4)
    hm[0, 0, 3, 6], hm[0, 0, 3, 4] = 0.5, 0.1         # right > left: x + 0.25
    hm[0, 0, 2, 5], hm[0, 0, 4, 5] = 0.5, 0.1         # above > below: y - 0.25
    hm[0, 2, 5, 0] = 1.0                              # on the border: no quarter step
    # (6.25, 3.75) + 0.5 = (6.75, 4.25), 0-based (5.75, 3.25), through h = 16 onto 8 around
    # (4.25, 4.25) inverted: v = 2 (v' - 1.875) = (7.75, 2.75) -> (7, 2), + 1 = (8, 3). The empty
    # map decodes as (0, 0) -> 0-based (-0.5, -0.5) -> -4.75 -> -4, + 1 = -3. The border one:
    # (1, 6) + 0.5 -> 0-based (0.5, 5.5) -> (-2.75, 7.25) -> (-2, 7), + 1. (The centre is off the
    # grid so that no result is a whole number, where truncation would turn on rounding error.)
    got = decode_official(hm, torch.tensor([[4.25, 4.25]]), torch.tensor([[0.08, 0.08]]))
    assert got.tolist() == [[[8.0, 3.0], [-3.0, -3.0], [-1.0, 8.0]]]


def write_cofw(path, key="IsT"):
    """A COFW-layout MATLAB file: a colour and a grey image, 29 x, 29 y and 29 flags a face."""
    from scipy.io import savemat
    rng = np.random.default_rng(3)
    images = np.empty((2, 1), dtype=object)
    images[0, 0] = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    images[1, 0] = rng.integers(0, 255, (44, 52), dtype=np.uint8)
    phis = np.zeros((2, 87))
    phis[:, :29] = rng.uniform(10.2, 30.7, (2, 29))
    phis[:, 29:58] = rng.uniform(5.5, 20.1, (2, 29))
    phis[:, [0, 1, 29, 30]] = [[10.2, 30.7, 5.5, 20.1]] * 2      # the extremes exactly
    savemat(str(path), {key: images, "phis" + key[2:]: phis, "bboxes" + key[2:]: np.zeros((2, 4))})
    return phis


def test_cofw_mat_lists_read_with_their_box(tmp_path):
    pytest.importorskip("scipy", reason="scipy (the mpii extra) reads .mat; CI installs it")
    phis = write_cofw(tmp_path / "COFW_test_color.mat")
    faces = read_face_list(tmp_path / "COFW_test_color.mat", 29)
    assert [f["pixels"].shape for f in faces] == [(48, 40, 3), (44, 52, 3)]
    np.testing.assert_array_equal(faces[1]["points"], np.stack([phis[1, :29], phis[1, 29:58]], 1))
    # x in [10.2, 30.7] -> whole pixels 10..31, centre 20.5; y in [5.5, 20.1] -> 5..21, centre 13;
    # scale max(21, 16) / 200
    center, scale = cofw_box(faces[0]["points"])
    assert center.tolist() == [20.5, 13.0] and scale == 0.105
    write_cofw(tmp_path / "COFW_train_color.mat", key="IsTr")
    assert len(read_face_list(tmp_path / "COFW_train_color.mat", 29)) == 2
    with pytest.raises(ValueError, match="is COFW's \\(29 landmarks\\), but the model predicts 68"):
        read_face_list(tmp_path / "COFW_test_color.mat", 68)
    from scipy.io import savemat
    savemat(str(tmp_path / "other.mat"), {"X": np.zeros(3)})
    with pytest.raises(ValueError, match=r"expected COFW's IsTr/phisTr or IsT/phisT, found \['X'\]"):
        read_face_list(tmp_path / "other.mat", 29)


def test_cofw_trains_and_evaluates_through_the_cli(tmp_path, capsys):
    pytest.importorskip("scipy", reason="scipy (the mpii extra) reads .mat; CI installs it")
    write_cofw(tmp_path / "train.mat", key="IsTr")
    write_cofw(tmp_path / "test.mat")
    cfg = write_task_yaml(tmp_path, "face_hrnetv2_w18_small_300w_128", MODEL={"NUM_JOINTS": 29},
                          DATASET={"DATASET": "COFW", "ROOT": str(tmp_path), "TRAINSET": str(tmp_path / "train.mat"),
                                   "TESTSET": str(tmp_path / "test.mat")})
    assert main(["train", "--task", "face", "--config", str(cfg), "--epochs", "1", "--batch", "2", "--workers", "0",
                 "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert "| full | 2 |" in capsys.readouterr().out


def test_the_pipeline_is_a_yaml_key_and_both_run(tmp_path, capsys):
    assert face_settings({}).pipeline == "official"
    assert face_settings({"HRFAST": {"FACE_PIPELINE": "affine"}}).pipeline == "affine"
    with pytest.raises(ValueError, match="HRFAST.FACE_PIPELINE must be one of official, affine, got 'exact'"):
        face_settings({"HRFAST": {"FACE_PIPELINE": "exact"}})
    from hrfast.data.faces import make_synthetic_faces
    faces = make_synthetic_faces(tmp_path / "faces", num_train=2, num_val=2, size=96, progress=False)
    for pipeline in ("official", "affine"):
        for train in (False, True):
            s = FaceLandmarks(faces["valid"], faces["images"], 68, 128, train=train, pipeline=pipeline, seed=1)[0]
            assert s["image"].shape == (3, 128, 128) and s["joints"].shape == (68, 2)
            assert s["joints_vis"].mean() > 0.9          # the synthetic faces sit well inside their crops
    official = FaceLandmarks(faces["valid"], faces["images"], 68, 128)[0]["joints"]
    assert torch.equal(official, torch.round(official / 4) * 4)     # whole heatmap pixels
    cfg = write_task_yaml(tmp_path, "face_hrnetv2_w18_small_300w_128", HRFAST={"FACE_PIPELINE": "affine"})
    from hrfast import build_model
    from hrfast.engine.classify import read_task_yaml
    torch.save(build_model(read_task_yaml(str(cfg))).state_dict(), tmp_path / "m.pth")
    assert main(["predict", "--task", "face", "--config", str(cfg), "--checkpoint", str(tmp_path / "m.pth"),
                 "--out", str(tmp_path / "p"), str(faces["images"] / "valid_00000.jpg")]) == 0
    assert np.array(json.loads((tmp_path / "p" / "landmarks.json").read_text())[0]["landmarks"]).shape == (68, 2)
