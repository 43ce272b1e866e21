"""The face task: the official CSV lists, NME against its definition and hand-made cases, the
crop, and train / eval / predict --task face through the CLI."""
import json

import numpy as np
import pytest
import torch
from conftest import write_task_yaml

from hrfast.cli import main
from hrfast.data.faces import FaceLandmarks, _flip, make_synthetic_faces, normaliser, read_face_csv, write_face_csv
from hrfast.engine.face import nme, nme_stats
from hrfast.ops.decode import heatmap_to_image


def numpy_nme(preds, points, num_points, boxes=None):
    """NME written from its definition: per face, the sum of the point distances over
    (K x the inter-ocular distance: 300W's outer eye corners 36 and 45), or over K x the box."""
    out = []
    for i in range(len(points)):
        d = np.sqrt(((preds[i] - points[i]) ** 2).sum(1))
        norm = boxes[i] if boxes is not None else np.sqrt(((points[i][36] - points[i][45]) ** 2).sum())
        out.append(d.sum() / (num_points * norm))
    return np.array(out)


def test_nme_of_a_hand_made_face():
    pts = np.zeros((1, 68, 2))
    pts[0, 45] = [50.0, 0.0]                           # inter-ocular distance 50
    preds = pts + np.array([3.0, 4.0])                 # every point 5 px off
    face = {"points": pts[0], "box_size": 0.0, "scale": 1.0}
    errors = nme(preds, pts, np.array([normaliser(face, 68)]))
    assert errors.tolist() == [0.1]
    assert nme_stats(errors) == {"NME": 0.1, "FR@0.08": 1.0, "FR@0.10": 0.0, "faces": 1.0}


def test_nme_equals_its_definition_on_random_faces():
    rng = np.random.default_rng(0)
    pts, preds = rng.uniform(0, 200, (5, 68, 2)), rng.uniform(0, 200, (5, 68, 2))
    norms = np.array([normaliser({"points": p, "box_size": 0.0, "scale": 1.0}, 68) for p in pts])
    np.testing.assert_allclose(nme(preds, pts, norms), numpy_nme(preds, pts, 68), rtol=1e-12)
    boxes = rng.uniform(50, 100, 5)                    # AFLW: the box size
    norms = np.array([normaliser({"points": p[:19], "box_size": b, "scale": 1.0}, 19) for p, b in zip(pts, boxes)])
    np.testing.assert_allclose(nme(preds[:, :19], pts[:, :19], norms), numpy_nme(preds[:, :19], pts[:, :19], 19, boxes))


def test_csv_lists_round_trip_in_both_layouts(tmp_path):
    rng = np.random.default_rng(1)
    for k, box in ((68, 0.0), (19, 73.5)):
        faces = [{"image": f"a/{i}.jpg", "scale": 1.5, "center": np.array([100.0, 90.0]), "box_size": box,
                  "points": np.round(rng.uniform(0, 200, (k, 2)), 2)} for i in range(3)]
        write_face_csv(tmp_path / f"{k}.csv", faces)
        back = read_face_csv(tmp_path / f"{k}.csv", k)
        assert [f["image"] for f in back] == [f["image"] for f in faces] and back[0]["box_size"] == box
        np.testing.assert_array_equal(back[2]["points"], faces[2]["points"])
    with pytest.raises(ValueError, match=r"19\.csv:2: expected 140 columns"):
        read_face_csv(tmp_path / "19.csv", 68)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_synthetic_faces(tmp_path_factory.mktemp("faces"), num_train=8, num_val=4, size=96, progress=False)


def test_the_crop_and_its_inverse_agree(faces):
    """An evaluation sample's crop joints, mapped back with its centre and scale as decoding
    does, are the annotated points."""
    ds = FaceLandmarks(faces["valid"], faces["images"], 68, 128, pipeline="affine")
    s = ds[0]
    back = heatmap_to_image(s["joints"][None].double(), s["center"][None].double(), s["scale"][None].double(),
                            (128, 128))
    np.testing.assert_allclose(back[0].numpy(), s["points"].numpy(), atol=1e-3)
    img = np.zeros((10, 20, 3), np.uint8)
    pts = np.array([[2.0, 3.0]] * 68)
    pts[45] = [15.0, 3.0]
    _, flipped, _ = _flip(img, pts, np.array([5.0, 5.0]), ((36, 45),))
    assert flipped[36].tolist() == [4.0, 3.0] and flipped[45].tolist() == [17.0, 3.0]


def test_train_eval_predict_through_the_cli(faces, tmp_path, capsys):
    """An official-style YAML (DATASET.ROOT / TRAINSET / TESTSET) drives train, eval (a row per
    subset list) and predict (a PNG and the landmarks)."""
    cfg = write_task_yaml(tmp_path, "face_hrnetv2_w18_small_300w_128", DATASET={
        "ROOT": str(faces["images"]), "TRAINSET": str(faces["train"]), "TESTSET": str(faces["valid"])})
    out = tmp_path / "run"
    common = ["--task", "face", "--config", str(cfg), "--batch", "4", "--workers", "0", "--quiet"]
    assert main(["train", *common, "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| full | 4 |" in text and "| challenge | 2 |" in text and "| common | 2 |" in text
    assert main(["eval", *common, "--out", str(tmp_path / "e"), "--checkpoint", str(out / "model_best.pth")]) == 0
    assert "| full | 4 |" in capsys.readouterr().out
    image = faces["images"] / "valid_00000.jpg"
    assert main(["predict", "--task", "face", "--config", str(cfg), "--checkpoint", str(out / "model_best.pth"),
                 "--out", str(tmp_path / "p"), str(image)]) == 0
    record = json.loads((tmp_path / "p" / "landmarks.json").read_text())[0]
    assert np.array(record["landmarks"]).shape == (68, 2)
    assert (tmp_path / "p" / "valid_00000_landmarks.png").stat().st_size > 1000
    assert torch.load(out / "model_best.pth", weights_only=True)["head.3.weight"].shape[0] == 68


@pytest.mark.parametrize("extra,message", [(["--config", "cls_hrnet_w18_small_64"], "--task face needs a hrnet config"),
                                           ([], "--synthetic must name the faces"),
                                           (["--synthetic"], "--synthetic writes 300W's 68 landmarks")])
def test_bad_arguments_are_one_line(tmp_path, capsys, extra, message):
    assert main(["train", "--task", "face", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
