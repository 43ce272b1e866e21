"""mmpose's top-down HRNet checkpoints (0.x and 1.x key layouts) load into hrfast.HRNet:
state dicts built in those layouts, loaded strictly, through the API and the CLI."""
import json

import pytest
import torch
from conftest import COCO_MINI

import hrfast
from hrfast.cli import main
from hrfast.safe_load import CheckpointError
from hrfast.weights import joints_of, load_weights, read_weights


def mmpose_file(tmp_path, model, version: str, extra=None):
    """``model``'s weights as mmpose saves a top-down HRNet: {'meta', 'state_dict'} with the
    backbone under ``backbone.`` and the heatmap head's last conv under
    ``keypoint_head.final_layer.`` (0.x) or ``head.final_layer.`` (1.x)."""
    head = {"0.x": "keypoint_head.", "1.x": "head."}[version]
    sd = {}
    for k, v in model.state_dict().items():
        sd[(head if k.startswith("final_layer.") else "backbone.") + k] = v.clone()
    sd.update(extra or {})
    meta = {"mmpose_version": "0.29.0" if version == "0.x" else "1.3.2", "epoch": 210}
    path = tmp_path / f"hrnet_w18_small_{version}.pth"
    torch.save({"meta": meta, "state_dict": sd}, path)
    return path


@pytest.mark.parametrize("version", ["0.x", "1.x"])
@pytest.mark.parametrize("joints", [17, 133, 21])
def test_both_layouts_load_strictly_with_any_keypoint_count(tmp_path, version, joints):
    """Body (17), whole body (133) and hand (21) models: the keypoint count is the file's."""
    torch.manual_seed(0)
    src = hrfast.HRNet.from_config("w18_small_128x96", num_joints=joints)
    path = mmpose_file(tmp_path, src, version)
    state = read_weights(path)
    assert joints_of(state) == joints and set(state) == set(src.state_dict())
    dst = hrfast.HRNet.from_config("w18_small_128x96", num_joints=joints)
    load_weights(dst, path)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_the_normalisation_buffers_of_1x_are_dropped(tmp_path):
    src = hrfast.HRNet.from_config("w18_small_128x96")
    path = mmpose_file(tmp_path, src, "1.x", {"data_preprocessor.mean": torch.zeros(3, 1, 1)})
    assert set(read_weights(path)) == set(src.state_dict())


def test_an_unknown_mmpose_head_is_one_clear_error(tmp_path):
    """A head with deconvolutions (SimpleBaseline's) is not HRNet's one-conv head."""
    src = hrfast.HRNet.from_config("w18_small_128x96")
    path = mmpose_file(tmp_path, src, "0.x", {"keypoint_head.deconv_layers.0.weight": torch.zeros(4, 4, 4, 4)})
    with pytest.raises(CheckpointError, match=r"an mmpose model whose head hrfast does not load "
                                              r"\(keypoint_head.deconv_layers.0.weight\)"):
        read_weights(path)


def test_predict_takes_an_mmpose_checkpoint(tmp_path, capsys):
    src = hrfast.HRNet.from_config("w18_small_128x96")
    path = mmpose_file(tmp_path, src, "1.x")
    image = sorted((COCO_MINI / "images").glob("*.jpg"))[0]
    out = tmp_path / "out"
    assert main(["predict", str(image), "--config", "w18_small_128x96", "--checkpoint", str(path),
                 "--out", str(out), "--no-flip"]) == 0
    assert len(json.loads((out / "keypoints.json").read_text())[0]["keypoints"][0]) == 17
    # a whole-body file is predicted and drawn as one, its 133 keypoints in the JSON
    (tmp_path / "wb").mkdir()
    wb = mmpose_file(tmp_path / "wb", hrfast.HRNet.from_config("w18_small_128x96", num_joints=133), "0.x")
    capsys.readouterr()
    assert main(["predict", str(image), "--config", "w18_small_128x96", "--checkpoint", str(wb),
                 "--out", str(tmp_path / "o2")]) == 0
    assert "predicts 133 joints: a COCO-WholeBody model" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "o2" / "keypoints.json").read_text())[0]["keypoints"][0]) == 133


def test_load_pose_model_takes_the_keypoint_count_and_config_from_the_file(tmp_path):
    """A whole-body mmpose file becomes a 133-keypoint W18-small net (the only built-in config
    its keys fit), with its weights."""
    from hrfast.weights import load_pose_model
    assert hrfast.load_checkpoint is load_pose_model                  # the public name
    src = hrfast.HRNet.from_config("w18_small_128x96", num_joints=133)
    model = hrfast.load_checkpoint(mmpose_file(tmp_path, src, "1.x"))
    assert model.num_joints == 133 and model.input_size == (96, 128)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in src.state_dict().items())
    with pytest.raises(ValueError, match="does not fit the model"):
        load_pose_model(mmpose_file(tmp_path, src, "0.x"), config="w32_256x192")
