"""Config loading: official YAML files, hrfast YAML, unknown keys, overrides."""
import pytest

import hrfast
from hrfast import ConfigError, HRNet, load_config
from hrfast.config import merge_dotted

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_official_experiment_yaml_builds_w32():
    cfg = load_config(DATA / "official_style_w32.yaml")
    assert cfg.MODEL.EXTRA.STAGE4.NUM_CHANNELS == [32, 64, 128, 256]
    assert cfg.GPUS == (0, 1, 2, 3)  # yacs-style literal decoded
    assert cfg.TRAIN.LR_STEP == [170, 200]
    model = HRNet.from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) == 28_536_113


def test_builtin_yaml_round_trips_through_load_config():
    for name in hrfast.available_configs():
        cfg = load_config(hrfast.config.CONFIG_DIR / f"{name}.yaml")
        assert cfg.MODEL.NUM_JOINTS == (133 if name.endswith("_wholebody") else 17)


def test_keys_are_case_insensitive(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("hrfast:\n  targets_on_device: true\nmodel:\n  num_joints: 14\n")
    cfg = load_config(p)
    assert cfg.HRFAST.TARGETS_ON_DEVICE is True and cfg.MODEL.NUM_JOINTS == 14


@pytest.mark.parametrize("text,match", [
    ("MODEL:\n  NUM_JOINT: 17\n", r"unknown config key 'MODEL.NUM_JOINT' \(did you mean MODEL.NUM_JOINTS\?\)"),
    ("TRAINING:\n  LR: 1\n", r"unknown config key 'TRAINING'"),
    ("MODEL:\n  EXTRA:\n    STAGE2:\n      NUM_CHANNEL: [1]\n", r"MODEL.EXTRA.STAGE2.NUM_CHANNEL"),
    ("TRAIN:\n  LR: fast\n", r"'TRAIN.LR' must be a number"),
    ("MODEL: 3\n", r"'MODEL' must be a mapping"),
    ("MODEL:\n  EXTRA:\n    STAGE2:\n      NUM_BRANCHES: 3\n",
     r"STAGE2.NUM_BLOCKS has 1 entries but NUM_BRANCHES is 3"),
    ("MODEL:\n  IMAGE_SIZE: [100, 256]\n", r"multiples of 32"),
    ("- a\n- b\n", r"top level must be a mapping"),
])
def test_bad_yaml_names_the_key(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_dotted_overrides():
    cfg = merge_dotted(hrfast.get_config("w18_small_128x96"), ["TRAIN.LR=0.01", "hrfast.amp=bf16"])
    assert cfg.TRAIN.LR == 0.01 and cfg.HRFAST.AMP == "bf16"
    with pytest.raises(ConfigError, match="TRAIN.LRR"):
        merge_dotted(cfg, ["TRAIN.LRR=1"])
