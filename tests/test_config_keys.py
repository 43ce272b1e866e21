"""Every key of the official schema acts, is noted, or has its unsupported values refused
(hrfast.config_keys); and the keys that act do what the official code does with them."""
import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import COCO_MINI, REPO

import hrfast
from hrfast.config import Config, ConfigError, default_config, load_config, merge_dotted
from hrfast.config_keys import ACTS, NOTED, REFUSED, policy

SOURCES = "\n".join(p.read_text() for p in (REPO / "hrfast").rglob("*.py") if p.name not in ("config_keys.py",))


def leaves(node: Config, path=""):
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, Config):
            yield from leaves(value, dotted)
        else:
            yield dotted


def test_every_key_of_the_schema_has_exactly_one_policy():
    keys = list(leaves(default_config()))
    assert len(keys) > 100
    kinds = {k: policy(k) for k in keys}          # raises for a key with none or two
    assert set(kinds.values()) == {"acts", "noted", "refused", "structured"}
    listed = set(ACTS) | set(NOTED) | set(REFUSED)
    assert listed <= set(keys), listed - set(keys)   # no policy for a key that does not exist


@pytest.mark.parametrize("key", sorted(ACTS))
def test_a_key_that_acts_is_read_by_the_code(key):
    *section, name = key.split(".")
    # read as cfg.SECTION.NAME, section.NAME, or through the config's own checks
    assert re.search(rf"\.{name}\b|\[\"{name}\"\]|\"{key}\"", SOURCES), f"{key} is listed as acting but never read"


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_refused_value_is_one_error_naming_the_key(key):
    accepted, _ = REFUSED[key]
    bad = (not accepted[0]) if isinstance(accepted[0], bool) else "nonsense"
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .* is not supported \(.*\); use "):
        merge_dotted(default_config(), [f"{key}={bad}"])
    ok = repr(accepted[0]) if isinstance(accepted[0], str) else accepted[0]      # '' stays a string in YAML
    merge_dotted(default_config(), [f"{key}={ok}"])          # the accepted value passes


def test_noted_keys_warn_once_per_file_and_the_official_files_load_unchanged(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(REPO / "tests" / "data" / "official_style_w32.yaml")
    notes = [str(w.message) for w in caught if "no effect in hrfast" in str(w.message)]
    assert len(notes) == 1 and "GPUS (one process per GPU" in notes[0] and "DEBUG.DEBUG" in notes[0]
    assert cfg.MODEL.NAME == "pose_hrnet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merge_dotted(default_config(), ["TEST.NMS_THRE=0.5"])
    assert any("TEST.NMS_THRE (unused by the official COCO evaluation" in str(w.message) for w in caught)


def test_post_process_false_decodes_by_argmax_and_shift_heatmap_is_honoured():
    from hrfast.inference import infer_heatmaps, inference_settings
    from hrfast.ops.decode import decode_heatmaps
    from hrfast.settings import settings_of
    cfg = default_config()
    s = inference_settings(settings_of(merge_dotted(cfg, ["TEST.POST_PROCESS=false"])).test)
    assert s.decode == "argmax" and s.decode_source == "TEST.POST_PROCESS false"
    assert inference_settings(settings_of(merge_dotted(cfg, ["TEST.POST_PROCESS=false"])).test,
                              decode="dark").decode == "dark"
    assert inference_settings(settings_of(cfg).test).decode == "quarter"
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 3, 5], hm[0, 0, 3, 6] = 1.0, 0.5            # the right neighbour is higher
    assert decode_heatmaps(hm, "argmax")[0].tolist() == [[[5.0, 3.0]]]       # hand-derived
    assert decode_heatmaps(hm, "quarter")[0].tolist() == [[[5.25, 3.0]]]
    assert not inference_settings(settings_of(merge_dotted(cfg, ["TEST.SHIFT_HEATMAP=false"])).test).shift_heatmap

    class Ramp(torch.nn.Module):          # heatmap = the input's first channel
        def forward(self, x):
            return x[:, :1]
    x = torch.zeros(1, 3, 1, 4)
    x[0, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # flipped input [4, 3, 2, 1] flipped back is [1, 2, 3, 4]; shifted right by one it is [1, 1, 2, 3]
    shifted = infer_heatmaps(Ramp(), x, True, True, perm=[0])
    plain = infer_heatmaps(Ramp(), x, True, False, perm=[0])
    assert shifted.flatten().tolist() == [1.0, 1.5, 2.5, 3.5] and plain.flatten().tolist() == [1, 2, 3, 4]


def test_model_file_is_evals_default_checkpoint(tmp_path, capsys):
    from hrfast.cli import main
    weights = tmp_path / "w.pth"
    torch.save(hrfast.HRNet.from_config("w18_small_128x96").state_dict(), weights)
    ann = COCO_MINI / "annotations" / "person_keypoints.json"
    args = ["eval", "--config", "w18_small_128x96", "--set", f"DATASET.TEST_ANN={ann}", "--set",
            f"DATASET.TEST_IMAGES={COCO_MINI / 'images'}", "--out", str(tmp_path / "e"), "--quiet", "--no-flip",
            # no loader processes: forked workers in this test process, after the OpenVINO runtime of
            # an earlier test, made a later mp.spawn (the DDP test) die of SIGSEGV
            "--workers", "0"]
    assert main(args) == 2
    assert "--checkpoint (or the config's TEST.MODEL_FILE) must name the weights" in capsys.readouterr().err
    assert main(args + ["--set", f"TEST.MODEL_FILE={weights}"]) == 0
    assert (tmp_path / "e" / "results.json").is_file()


def test_cudnn_keys_set_torch_backends():
    from hrfast.device import apply_cudnn_settings
    from hrfast.settings import settings_of
    old = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled)
    try:
        cfg = merge_dotted(default_config(), ["CUDNN.BENCHMARK=false", "CUDNN.DETERMINISTIC=true",
                                              "CUDNN.ENABLED=false"])
        apply_cudnn_settings(settings_of(cfg).runtime.cudnn)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                torch.backends.cudnn.enabled) == (False, True, False)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled = old


def classification_checkpoint(pose: torch.nn.Module, path: Path) -> dict:
    """A state_dict in HRNet-Image-Classification's layout, built from a pose network's
    backbone: the same stem, transitions and stages, plus a classification head
    (incre_modules, downsamp_modules, a 2048-channel final_layer, classifier) and the
    multi-scale fuse layers the pose network's last module lacks."""
    state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.1)
             if v.is_floating_point() else v.clone()
             for k, v in pose.state_dict().items() if not k.startswith("final_layer")}
    state.update({"incre_modules.0.0.conv1.weight": torch.randn(32, 18, 1, 1),
                  "downsamp_modules.0.0.weight": torch.randn(256, 128, 3, 3),
                  "final_layer.0.weight": torch.randn(2048, 1024, 1, 1), "final_layer.1.weight": torch.ones(2048),
                  "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.zeros(1000),
                  "stage4.0.fuse_layers.1.0.0.0.weight": torch.randn(36, 18, 3, 3)})
    torch.save(state, path)
    return state


def test_model_pretrained_initialises_the_backbone_as_init_weights_does(tmp_path, capsys):
    from hrfast.weights import load_pretrained
    pose = hrfast.HRNet.from_config("w18_small_128x96")
    src = classification_checkpoint(pose, tmp_path / "imagenet.pth")
    fresh = hrfast.HRNet.from_config("w18_small_128x96")
    head_before = fresh.final_layer.weight.clone()
    layers = ("conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
              "transition3", "stage4")
    report = load_pretrained(fresh, tmp_path / "imagenet.pth", layers)
    mine = fresh.state_dict()
    backbone = [k for k in mine if not k.startswith("final_layer")]
    assert all(torch.equal(mine[k], src[k]) for k in backbone)
    assert torch.equal(fresh.final_layer.weight, head_before)            # the pose head keeps its init
    assert f"loaded {len(backbone)} of the network's {len(mine)} tensors" in report
    assert "outside MODEL.EXTRA.PRETRAINED_LAYERS (classifier, downsamp_modules, final_layer, incre_modules)" in report
    assert "1 not in this network (stage4)" in report
    # '*' takes every name the network has: the classification head's are not among them
    star = load_pretrained(hrfast.HRNet.from_config("w18_small_128x96"), tmp_path / "imagenet.pth")
    assert "7 not in this network (classifier, downsamp_modules, final_layer, incre_modules, stage4)" in star
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAINED not found"):
        load_pretrained(fresh, tmp_path / "none.pth")
    torch.save({"x.weight": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="shares no tensor with the network"):
        load_pretrained(fresh, tmp_path / "other.pth")


def test_train_starts_from_model_pretrained(tmp_path, capsys):
    from hrfast.cli import main
    pose = hrfast.HRNet.from_config("w18_small_128x96")
    classification_checkpoint(pose, tmp_path / "imagenet.pth")
    assert main(["train", "--config", "w18_small_128x96", "--synthetic", "--out", str(tmp_path / "run"), "--quiet",
                 "--epochs", "1", "--batch", "8", "--workers", "0", "--set", "HRFAST.MAX_TRAIN_IMAGES=8",
                 "--set", f"MODEL.PRETRAINED={tmp_path / 'imagenet.pth'}", "--set", "HRFAST.VAL_EVERY=5"]) == 0
    out = capsys.readouterr().out
    assert f"MODEL.PRETRAINED {tmp_path / 'imagenet.pth'}: loaded" in out
