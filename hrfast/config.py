"""Experiment configuration: the official HRNet (yacs) schema plus an ``HRFAST`` section.

``load_config(path)`` reads an official ``experiments/coco/hrnet/*.yaml`` file or an hrfast YAML
and merges it over the defaults below. Keys are matched case-insensitively (stored upper-case);
a key that is not in the schema raises :class:`ConfigError` naming its dotted path.
Built-in configurations are YAML files in ``hrfast/configs/`` (configs as data).
"""
from __future__ import annotations

import ast
import copy
import difflib
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import yaml

from .config_keys import get_dotted, note_ignored, refuse_unsupported

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file or value that does not fit the schema."""


class Config(dict):
    """A nested dict with attribute access: ``cfg.MODEL.EXTRA.STAGE2.NUM_CHANNELS``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> Dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


_STAGE_KEYS = {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": "BASIC", "NUM_BLOCKS": [4],
               "NUM_CHANNELS": [32], "FUSE_METHOD": "SUM"}

# Defaults follow the official lib/config/default.py, with the COCO SimpleBaseline recipe
# (experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml) as the default values.
_DEFAULTS: Dict[str, Any] = {
    "OUTPUT_DIR": "output", "LOG_DIR": "log", "DATA_DIR": "", "GPUS": (0,), "WORKERS": "auto",
    "PRINT_FREQ": 100, "AUTO_RESUME": False, "PIN_MEMORY": True, "RANK": 0,
    "CUDNN": {"BENCHMARK": True, "DETERMINISTIC": False, "ENABLED": True},
    "MODEL": {
        "NAME": "pose_hrnet", "INIT_WEIGHTS": True, "PRETRAINED": "", "NUM_JOINTS": 17,
        "TAG_PER_JOINT": True, "TARGET_TYPE": "gaussian", "IMAGE_SIZE": [192, 256],
        "HEATMAP_SIZE": [48, 64], "SIGMA": 2, "STYLE": "pytorch",
        "EXTRA": {"PRETRAINED_LAYERS": ["*"], "FINAL_CONV_KERNEL": 1, "STEM_CHANNELS": 64,
                  "STAGE1": dict(_STAGE_KEYS, BLOCK="BOTTLENECK", NUM_BLOCKS=[4], NUM_CHANNELS=[64]),
                  "STAGE2": dict(_STAGE_KEYS), "STAGE3": dict(_STAGE_KEYS),
                  "STAGE4": dict(_STAGE_KEYS)},
    },
    "LOSS": {"USE_OHKM": False, "TOPK": 8, "USE_TARGET_WEIGHT": True,
             "USE_DIFFERENT_JOINTS_WEIGHT": False},
    "DATASET": {"ROOT": "", "DATASET": "coco", "TRAIN_SET": "train2017", "TEST_SET": "val2017",
                "DATA_FORMAT": "jpg", "HYBRID_JOINTS_TYPE": "", "SELECT_DATA": False,
                "FLIP": True, "SCALE_FACTOR": 0.35, "ROT_FACTOR": 45, "PROB_HALF_BODY": 0.3,
                "NUM_JOINTS_HALF_BODY": 8, "COLOR_RGB": True, "TRAIN_ANN": "", "TEST_ANN": "",
                "TRAIN_IMAGES": "", "TEST_IMAGES": "",
                # the keypoint set, where the annotation file cannot say it (hrfast.data.keypoints);
                # empty: COCO's for COCO's 17 names, else derived (left/right names, leg names,
                # uniform OKS sigma 0.089, weights 1)
                "FLIP_PAIRS": [], "SIGMAS": [], "JOINT_WEIGHTS": [], "UPPER_BODY": []},
    "TRAIN": {"LR_FACTOR": 0.1, "LR_STEP": [170, 200], "LR": 0.001, "OPTIMIZER": "adam",
              "MOMENTUM": 0.9, "WD": 0.0001, "NESTEROV": False, "GAMMA1": 0.99, "GAMMA2": 0.0,
              "BEGIN_EPOCH": 0, "END_EPOCH": 210, "RESUME": False, "CHECKPOINT": "",
              "BATCH_SIZE_PER_GPU": 32, "SHUFFLE": True},
    "TEST": {"BATCH_SIZE_PER_GPU": 32, "FLIP_TEST": True, "POST_PROCESS": True,
             "SHIFT_HEATMAP": True, "USE_GT_BBOX": True, "IMAGE_THRE": 0.0, "NMS_THRE": 1.0,
             "SOFT_NMS": False, "OKS_THRE": 0.9, "IN_VIS_THRE": 0.2, "COCO_BBOX_FILE": "",
             "BBOX_THRE": 1.0, "MODEL_FILE": ""},
    "DEBUG": {"DEBUG": False, "SAVE_BATCH_IMAGES_GT": False, "SAVE_BATCH_IMAGES_PRED": False,
              "SAVE_HEATMAPS_GT": False, "SAVE_HEATMAPS_PRED": False},
    # hrfast's own settings; everything above is the official schema.
    "HRFAST": {"BACKEND": "auto", "AMP": "none", "CHANNELS_LAST": False, "COMPILE": False,
               "GRAD_CLIP": 0.0, "EMA": 0.0, "SEED": 0, "TARGETS_ON_DEVICE": False,
               "TARGET_ENCODING": "msra", "DECODE": "quarter", "SYNC_BN": False,
               "DETERMINISTIC": False, "MAX_TRAIN_IMAGES": 0, "VAL_EVERY": 1,
               "FUSED_OPTIMIZER": True, "FUSED_LOSS": True, "FUSED_BN": True, "NATIVE_WGRAD": True,
               "LR_SCHEDULE": "step",
               "WARMUP_EPOCHS": 0},
}


def _to_config(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config({str(k): _to_config(v) for k, v in value.items()})
    return value


def default_config() -> Config:
    """A fresh copy of the defaults (official schema + HRFAST section)."""
    return _to_config(copy.deepcopy(_DEFAULTS))


def _decode(value: Any) -> Any:
    # yacs decodes strings that look like Python literals, e.g. GPUS: (0,1,2,3).
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _merge(base: Config, new: Mapping[str, Any], path: str) -> None:
    for raw_key, value in new.items():
        key = str(raw_key).upper()
        where = f"{path}.{key}" if path else key
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean {path + '.' if path else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}")
        current = base[key]
        if isinstance(current, Config):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {where!r} must be a mapping, got {value!r}")
            _merge(current, value, where)
            continue
        value = _decode(value)
        if isinstance(value, Mapping):
            raise ConfigError(f"config key {where!r} takes a value, not a mapping")
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"config key {where!r} must be true/false, got {value!r}")
        if isinstance(current, (int, float)) and not isinstance(current, bool) and \
                (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"config key {where!r} must be a number, got {value!r}")
        if isinstance(current, (list, tuple)):
            value = _check_list(value, current, where)
        base[key] = value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_list(value: Any, current, where: str):
    """A list value: a list whose items are numbers where the default's are (LR_STEP,
    IMAGE_SIZE, NUM_CHANNELS, ...), strings where the default's are."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(current, tuple):
        value = (value,)   # GPUS: 0 is a one-element tuple in the official YAMLs
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
    if current and all(_is_number(v) for v in current) and not all(_is_number(v) for v in value):
        raise ConfigError(f"config key {where!r} must be a list of numbers, got {value!r}")
    if current and all(isinstance(v, str) for v in current) and not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key {where!r} must be a list of strings, got {value!r}")
    return type(current)(value)


def merge_config(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return a copy of ``cfg`` with ``overrides`` (nested mapping) merged in, validated."""
    out = copy.deepcopy(cfg)
    _merge(out, overrides, "")
    validate(out, "config")
    return out


def merge_dotted(cfg: Config, pairs: List[str]) -> Config:
    """Apply ``KEY.SUB=value`` strings (command-line overrides); values parsed as YAML."""
    out = copy.deepcopy(cfg)
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like SECTION.KEY=value")
        dotted, raw = pair.split("=", 1)
        nested: Dict[str, Any] = {}
        node = nested
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
        _merge(out, nested, "")
    validate(out, "--set")
    note_ignored(out, cfg, "--set")
    return out


def load_config(path: Union[str, Path]) -> Config:
    """Read an official HRNet experiment YAML or an hrfast YAML into a validated :class:`Config`.

    Raises FileNotFoundError for a missing file and :class:`ConfigError` for unknown keys or
    values of the wrong kind (the message names the dotted key).
    """
    path = Path(path)
    data = read_yaml(path)
    cfg = default_config()
    try:
        _merge(cfg, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    validate(cfg, str(path))
    note_ignored(cfg, default_config(), str(path))
    return cfg


def read_yaml(path: Union[str, Path]) -> Mapping[str, Any]:
    """The sections of a YAML config file, read with ``yaml.safe_load`` (it is untrusted).
    FileNotFoundError for a missing file, :class:`ConfigError` for bad YAML or a top level
    that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def available_configs() -> List[str]:
    """Names of the built-in configurations (``HRNet.from_config(name)``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str) -> Config:
    """A built-in config name or a YAML path -> :class:`Config` (what ``--config`` takes)."""
    if name_or_path in available_configs():
        return get_config(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).exists():
        return load_config(name_or_path)
    return get_config(name_or_path)  # raises with the list of names


def get_config(name: str) -> Config:
    """The built-in configuration ``name``, e.g. ``"w32_256x192"``."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, available_configs(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown config name {name!r}; available: {available_configs()}{hint}")
    return load_config(path)


def validate(cfg: Config, where: str) -> None:
    """Raise ConfigError (prefixed with ``where``) for values the schema's types allow but the
    code cannot use: non-finite numbers, numbers out of :data:`RANGES`, the model's shape, and
    the training and keypoint settings."""
    _validate_finite(cfg, where, "")
    refuse_unsupported(cfg, where, ConfigError)
    _validate_ranges(cfg, where)
    _validate_model(cfg, where)
    _validate_training(cfg, where)
    _validate_keypoints(cfg, where)


INF = float("inf")
# Every numeric key's range, in one place: (low, high, what the range means). Bounds are
# inclusive unless the text says otherwise; a key not listed takes any finite number.
RANGES = {
    "TRAIN.LR": (0, INF, "a learning rate > 0"),
    "TRAIN.LR_FACTOR": (0, 1, "a decay factor in (0, 1]"),
    "TRAIN.MOMENTUM": (0, 1, "a momentum in [0, 1)"),
    "TRAIN.WD": (0, 1, "a weight decay in [0, 1)"),
    "TRAIN.GAMMA1": (0, 1, "in [0, 1]"), "TRAIN.GAMMA2": (0, 1, "in [0, 1]"),
    "HRFAST.EMA": (0, 1, "an EMA decay per step in [0, 1) (0: off)"),
    "HRFAST.GRAD_CLIP": (0, INF, "a gradient-norm bound >= 0 (0: off)"),
    "HRFAST.SEED": (0, 2 ** 63 - 1, "an integer >= 0"),
    "HRFAST.WARMUP_EPOCHS": (0, 10000, "an epoch count >= 0"),
    "MODEL.SIGMA": (0, 64, "a Gaussian sigma in heatmap pixels in (0, 64]"),
    "MODEL.NUM_JOINTS": (1, 1000, "a keypoint count in 1..1000"),
    "MODEL.EXTRA.STEM_CHANNELS": (1, 4096, "a channel count in 1..4096"),
    "MODEL.EXTRA.FINAL_CONV_KERNEL": (1, 7, "an odd kernel size in 1..7"),
    "LOSS.TOPK": (1, 1000, "the hardest joints kept by OHKM, 1..NUM_JOINTS"),
    "DATASET.SCALE_FACTOR": (0, 1, "a scale jitter in [0, 1)"),
    "DATASET.ROT_FACTOR": (0, 180, "a rotation in degrees in [0, 180]"),
    "DATASET.PROB_HALF_BODY": (-1, 1, "a probability in [0, 1], or -1 (off, as the official MPII files say)"),
    "DATASET.NUM_JOINTS_HALF_BODY": (0, 1000, "a joint count >= 0"),
    "TEST.OKS_THRE": (0, 1, "an OKS threshold in [0, 1]"),
    "TEST.IN_VIS_THRE": (0, 1, "a joint-score threshold in [0, 1]"),
    "TEST.IMAGE_THRE": (0, 1, "a detection-score threshold in [0, 1]"),
    "TEST.NMS_THRE": (0, 1, "an NMS threshold in [0, 1]"),
    "TEST.BBOX_THRE": (0, 1, "a box threshold in [0, 1]"),
}
_OPEN_LOW = {"TRAIN.LR", "TRAIN.LR_FACTOR", "MODEL.SIGMA"}                       # low bound excluded
_OPEN_HIGH = {"TRAIN.MOMENTUM", "TRAIN.WD", "HRFAST.EMA", "DATASET.SCALE_FACTOR"}  # high bound excluded
_INTEGERS = {"HRFAST.SEED", "HRFAST.WARMUP_EPOCHS", "MODEL.NUM_JOINTS", "MODEL.EXTRA.STEM_CHANNELS",
             "MODEL.EXTRA.FINAL_CONV_KERNEL", "LOSS.TOPK", "DATASET.NUM_JOINTS_HALF_BODY"}


def _validate_finite(node: Config, where: str, path: str) -> None:
    """No NaN or infinity anywhere (YAML's .nan and .inf parse as floats)."""
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, Config):
            _validate_finite(value, where, dotted)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}: {dotted} must be a finite number, got {v}")


def _validate_ranges(cfg: Config, where: str) -> None:
    for key, (lo, hi, meaning) in RANGES.items():
        v = get_dotted(cfg, key)
        low_ok = v > lo if key in _OPEN_LOW else v >= lo
        high_ok = v < hi if key in _OPEN_HIGH else v <= hi
        whole = key not in _INTEGERS or float(v).is_integer()
        if not (low_ok and high_ok and whole):
            raise ConfigError(f"{where}: {key} must be {meaning}, got {v}")
    kernel = int(cfg.MODEL.EXTRA.FINAL_CONV_KERNEL)
    if kernel % 2 == 0:
        raise ConfigError(f"{where}: MODEL.EXTRA.FINAL_CONV_KERNEL must be odd, got {kernel}")
    if int(cfg.LOSS.TOPK) > int(cfg.MODEL.NUM_JOINTS) and cfg.LOSS.USE_OHKM:
        raise ConfigError(f"{where}: LOSS.TOPK ({cfg.LOSS.TOPK}) must not exceed MODEL.NUM_JOINTS "
                          f"({cfg.MODEL.NUM_JOINTS})")


DATASETS = ("coco", "coco-wholebody", "mpii")


def _validate_keypoints(cfg: Config, where: str) -> None:
    d, k = cfg.DATASET, int(cfg.MODEL.NUM_JOINTS)
    if d.DATASET not in DATASETS:
        raise ConfigError(f"{where}: DATASET.DATASET must be one of {', '.join(DATASETS)} (coco: any COCO-format "
                          f"keypoint file), got {d.DATASET!r}")
    if d.DATASET == "coco-wholebody" and k != 133:
        raise ConfigError(f"{where}: DATASET.DATASET coco-wholebody has 133 keypoints, but MODEL.NUM_JOINTS is {k} "
                          f"(the config w32_256x192_wholebody sets both)")
    for pair in d.FLIP_PAIRS:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(j, int) for j in pair)):
            raise ConfigError(f"{where}: DATASET.FLIP_PAIRS must be a list of [a, b] joint indices, got {pair!r}")
        if not all(0 <= j < k for j in pair):
            raise ConfigError(f"{where}: DATASET.FLIP_PAIRS {list(pair)} names a joint outside 0..{k - 1} "
                              f"(MODEL.NUM_JOINTS is {k})")
    for key in ("SIGMAS", "JOINT_WEIGHTS"):
        values = d[key]
        if values and len(values) != k:
            raise ConfigError(f"{where}: DATASET.{key} must hold MODEL.NUM_JOINTS = {k} values, got {len(values)}")
        if any(not _is_number(v) or v <= 0 for v in values):
            raise ConfigError(f"{where}: DATASET.{key} must be positive numbers, got {list(values)}")
    if any(not isinstance(j, int) or not 0 <= j < k for j in d.UPPER_BODY):
        raise ConfigError(f"{where}: DATASET.UPPER_BODY must list joints in 0..{k - 1}, got {list(d.UPPER_BODY)}")


def _validate_training(cfg: Config, where: str) -> None:
    t = cfg.TRAIN
    if not int(t.END_EPOCH) > int(t.BEGIN_EPOCH) >= 0:
        raise ConfigError(f"{where}: TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH >= 0, got "
                          f"{t.END_EPOCH} and {t.BEGIN_EPOCH}")
    if any(not isinstance(s, int) or s < 0 for s in t.LR_STEP) or list(t.LR_STEP) != sorted(t.LR_STEP):
        raise ConfigError(f"{where}: TRAIN.LR_STEP must be increasing epochs (integers >= 0), got {list(t.LR_STEP)}")
    for key in ("TRAIN.BATCH_SIZE_PER_GPU", "TEST.BATCH_SIZE_PER_GPU", "HRFAST.VAL_EVERY"):
        section, name = key.split(".")
        if int(cfg[section][name]) < 1:
            raise ConfigError(f"{where}: {key} must be at least 1, got {cfg[section][name]}")
    w = cfg.WORKERS
    if w != "auto" and (not isinstance(w, int) or isinstance(w, bool) or w < 0):
        raise ConfigError(f"{where}: WORKERS must be auto (the machine's cores minus one) or an integer >= 0, "
                          f"got {w!r}")
    if int(cfg.HRFAST.MAX_TRAIN_IMAGES) < 0:
        raise ConfigError(f"{where}: HRFAST.MAX_TRAIN_IMAGES must be at least 0, got {cfg.HRFAST.MAX_TRAIN_IMAGES}")


def _validate_model(cfg: Config, where: str) -> None:
    extra = cfg.MODEL.EXTRA
    for idx in (2, 3, 4):
        st = extra[f"STAGE{idx}"]
        n = st.NUM_BRANCHES
        for key in ("NUM_BLOCKS", "NUM_CHANNELS"):
            if len(st[key]) != n:
                raise ConfigError(f"{where}: MODEL.EXTRA.STAGE{idx}.{key} has {len(st[key])} "
                                  f"entries but NUM_BRANCHES is {n}")
        if st.BLOCK not in ("BASIC", "BOTTLENECK"):
            raise ConfigError(f"{where}: MODEL.EXTRA.STAGE{idx}.BLOCK must be BASIC or BOTTLENECK, "
                              f"got {st.BLOCK!r}")
        if st.FUSE_METHOD != "SUM":
            raise ConfigError(f"{where}: MODEL.EXTRA.STAGE{idx}.FUSE_METHOD must be SUM, got {st.FUSE_METHOD!r}")
    for key in ("IMAGE_SIZE", "HEATMAP_SIZE"):
        size = list(cfg.MODEL[key])
        if len(size) != 2 or not all(isinstance(v, int) and 0 < v <= 8192 for v in size):
            raise ConfigError(f"{where}: MODEL.{key} must be [width, height], whole pixels in 1..8192, got {size}")
    w, h = cfg.MODEL.IMAGE_SIZE
    if w % 32 or h % 32:
        raise ConfigError(f"{where}: MODEL.IMAGE_SIZE must be multiples of 32, got {[w, h]}")
    for idx in (1, 2, 3, 4):
        st = extra[f"STAGE{idx}"]
        counts = [st.NUM_MODULES, st.NUM_BRANCHES, *st.NUM_BLOCKS, *st.NUM_CHANNELS]
        if not all(isinstance(v, int) and v >= 1 for v in counts) or st.NUM_BRANCHES > 4:
            raise ConfigError(f"{where}: MODEL.EXTRA.STAGE{idx} counts (NUM_MODULES, NUM_BRANCHES <= 4, NUM_BLOCKS, "
                              f"NUM_CHANNELS) must be whole numbers >= 1, got {counts}")


def model_spec(cfg: Config) -> Dict[str, Any]:
    """The plain model description HRNet is built from (lower-case keys)."""
    extra = cfg.MODEL.EXTRA

    def stage(st: Config) -> Dict[str, Any]:
        return {"num_modules": int(st.NUM_MODULES), "block": st.BLOCK,
                "num_blocks": list(st.NUM_BLOCKS), "num_channels": list(st.NUM_CHANNELS)}

    return {"num_joints": int(cfg.MODEL.NUM_JOINTS), "stem_channels": int(extra.STEM_CHANNELS),
            "final_conv_kernel": int(extra.FINAL_CONV_KERNEL),
            "image_size": tuple(cfg.MODEL.IMAGE_SIZE),
            "stage1": stage(extra.STAGE1),
            "stages": [stage(extra[f"STAGE{i}"]) for i in (2, 3, 4)]}
