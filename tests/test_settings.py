"""Typed settings (hrfast.settings): every key that acts reaches them, the engine reads nothing
else, and the parts hold what the keys say."""
import dataclasses
import re

import pytest
import yaml
from conftest import REPO

from hrfast.config import default_config, merge_dotted
from hrfast.config_keys import ACTS, get_dotted
from hrfast.settings import Settings, settings_of

# A valid value other than the default for the keys where "flip it, add one, halve it, append
# to it" would break a rule of the schema (odd kernels, enums, lists of a given length).
OTHER = {
    "WORKERS": 1, "DATASET.DATASET": "mpii", "TRAIN.OPTIMIZER": "sgd", "TRAIN.LR_STEP": [100, 200],
    "MODEL.IMAGE_SIZE": [256, 320], "MODEL.HEATMAP_SIZE": [64, 80], "MODEL.EXTRA.FINAL_CONV_KERNEL": 3,
    "MODEL.EXTRA.PRETRAINED_LAYERS": ["conv1"], "DATASET.FLIP_PAIRS": [[1, 2]],
    "DATASET.SIGMAS": [0.05] * 17, "DATASET.JOINT_WEIGHTS": [1.5] * 17, "DATASET.UPPER_BODY": [0, 1],
    "HRFAST.BACKEND": "reference", "HRFAST.AMP": "bf16", "HRFAST.TARGET_ENCODING": "udp",
    "HRFAST.DECODE": "dark", "HRFAST.LR_SCHEDULE": "cosine",
}


def other_value(key, value):
    if key in OTHER:
        return OTHER[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return value + "_other"
    raise AssertionError(f"{key}: add a valid other value for {value!r} to OTHER")


def parts(s: Settings):
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "config"}


HRFAST_KEYS = [f"HRFAST.{k}" for k in default_config().HRFAST]


@pytest.mark.parametrize("key", sorted(ACTS) + HRFAST_KEYS)
def test_every_key_that_acts_changes_the_settings(key):
    """A key the engine honours must reach the typed settings: it is the only way in."""
    base = default_config()
    value = other_value(key, get_dotted(base, key))
    changed = settings_of(merge_dotted(base, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"]))
    before, after = parts(settings_of(base)), parts(changed)
    assert before != after, f"{key} = {value!r} changes no setting"
    assert get_dotted(changed.config, key) is not None


def test_the_engine_reads_no_config_key_itself():
    """train, evaluate and the data code take settings: no ``cfg.SECTION`` read remains."""
    for path in sorted((REPO / "hrfast" / "engine").glob("*.py")):
        code = re.sub(r'""".*?"""', "", path.read_text(), flags=re.S)       # docstrings may name keys
        hits = re.findall(r"\b\w+\.(?:HRFAST|TRAIN|TEST|DATASET|MODEL|LOSS|CUDNN|WORKERS)\b", code)
        assert not hits, f"{path.name} reads {hits[:3]} from a config"


def test_the_parts_hold_the_values_of_their_keys():
    cfg = merge_dotted(default_config(), ["TRAIN.LR=0.002", "TRAIN.LR_STEP=[3, 5]", "TEST.FLIP_TEST=false",
                                          "DATASET.ROT_FACTOR=30", "CUDNN.ENABLED=false", "WORKERS=0",
                                          "LOSS.USE_OHKM=true", "LOSS.TOPK=4", "MODEL.NUM_JOINTS=5"])
    s = settings_of(cfg)
    assert (s.train.lr, s.train.lr_step, s.train.loss.use_ohkm, s.train.loss.topk) == (0.002, (3, 5), True, 4)
    assert not s.test.flip_test and s.data.augmentation.rotation_factor == 30.0
    assert (s.runtime.cudnn.enabled, s.runtime.workers) == (False, 0)
    assert s.model.spec["num_joints"] == 5 == s.data.num_joints
    assert (s.data.image_size, s.data.heatmap_size) == ((192, 256), (48, 64))     # (width, height)
    assert settings_of(s) is s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.train.lr = 1.0


def test_override_merges_and_checks():
    s = settings_of(default_config())
    det = s.override(TEST={"USE_GT_BBOX": False, "COCO_BBOX_FILE": "dets.json"})
    assert (det.data.use_gt_bbox, det.data.bbox_file) == (False, "dets.json") and s.data.use_gt_bbox
    with pytest.raises(ValueError, match="TRAIN.LR must be a learning rate > 0"):
        s.override(TRAIN={"LR": -1.0})
