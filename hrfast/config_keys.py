"""What every key of the official HRNet schema does in hrfast: it acts, it is noted, or a value
hrfast cannot honour is refused.

- ``ACTS``: the key does what the official code does with it (the text says where).
- ``NOTED``: the key has no effect in hrfast, for the reason given; a config that sets it to
  anything but the default gets one warning saying so. The official experiment files set some
  of these (``GPUS: (0,1,2,3)``), which is why they are not refused.
- ``REFUSED``: only the listed values are accepted (those hrfast implements); any other is a
  ``ConfigError`` that names the key and what to do instead.

``tests/test_config_keys.py`` walks the whole schema and checks that every key has exactly one
of the three, that an acting key is read by the code, and that a refused value is refused.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Tuple

ACTS: Dict[str, str] = {
    "WORKERS": "data-loading processes (default: what the machine has)",
    "AUTO_RESUME": "train resumes from OUT/checkpoint.pth when it exists, as --resume",
    "PIN_MEMORY": "pinned host memory for the loaders (CUDA)",
    "CUDNN.BENCHMARK": "torch.backends.cudnn.benchmark (no effect on the CPU)",
    "CUDNN.DETERMINISTIC": "torch.backends.cudnn.deterministic (no effect on the CPU)",
    "CUDNN.ENABLED": "torch.backends.cudnn.enabled (no effect on the CPU)",
    "MODEL.INIT_WEIGHTS": "with MODEL.PRETRAINED, train starts from that checkpoint",
    "MODEL.PRETRAINED": "an ImageNet (HRNet-Image-Classification) or pose checkpoint for the backbone",
    "MODEL.NUM_JOINTS": "the keypoints the final layer predicts",
    "MODEL.IMAGE_SIZE": "the network input, width and height",
    "MODEL.HEATMAP_SIZE": "the heatmaps, width and height",
    "MODEL.SIGMA": "the Gaussian targets' sigma",
    "MODEL.EXTRA.PRETRAINED_LAYERS": "the top-level layers taken from MODEL.PRETRAINED ('*': all)",
    "MODEL.EXTRA.FINAL_CONV_KERNEL": "the final layer's kernel size",
    "MODEL.EXTRA.STEM_CHANNELS": "the stem's channels (64 in every official model)",
    "LOSS.USE_OHKM": "online hard keypoint mining (JointsOHKMMSELoss)",
    "LOSS.TOPK": "the joints OHKM keeps",
    "LOSS.USE_TARGET_WEIGHT": "joints weighted by their visibility in the loss",
    "LOSS.USE_DIFFERENT_JOINTS_WEIGHT": "the keypoint set's joint weights in the targets",
    "DATASET.ROOT": "the dataset folder (--data)",
    "DATASET.DATASET": "coco (any COCO-format keypoint file), coco-wholebody (133 keypoints, per-part AP) or mpii",
    "DATASET.TRAIN_SET": "the training split's name", "DATASET.TEST_SET": "the test split's name",
    "DATASET.FLIP": "horizontal flips in training",
    "DATASET.SCALE_FACTOR": "random scale in training", "DATASET.ROT_FACTOR": "random rotation in training",
    "DATASET.PROB_HALF_BODY": "the half-body crop's probability",
    "DATASET.NUM_JOINTS_HALF_BODY": "the visible joints a half-body crop needs",
    "DATASET.TRAIN_ANN": "the training annotation file", "DATASET.TEST_ANN": "the test annotation file",
    "DATASET.TRAIN_IMAGES": "the training image folder", "DATASET.TEST_IMAGES": "the test image folder",
    "DATASET.FLIP_PAIRS": "the keypoint set's left/right pairs", "DATASET.SIGMAS": "its OKS sigmas",
    "DATASET.JOINT_WEIGHTS": "its joint weights", "DATASET.UPPER_BODY": "its upper-body joints",
    "TRAIN.LR_FACTOR": "the step decay factor", "TRAIN.LR_STEP": "the decay epochs", "TRAIN.LR": "the learning rate",
    "TRAIN.OPTIMIZER": "adam, adamw or sgd", "TRAIN.MOMENTUM": "SGD's momentum", "TRAIN.WD": "weight decay",
    "TRAIN.NESTEROV": "SGD's Nesterov momentum",
    "TRAIN.BEGIN_EPOCH": "the first epoch", "TRAIN.END_EPOCH": "the last epoch",
    "TRAIN.BATCH_SIZE_PER_GPU": "the batch per process", "TRAIN.SHUFFLE": "a shuffled training order",
    "TEST.BATCH_SIZE_PER_GPU": "the evaluation batch per process",
    "TEST.FLIP_TEST": "the flip test (eval, predict, validation)",
    "TEST.POST_PROCESS": "false: plain argmax decoding, without the quarter-pixel offset (official get_final_preds)",
    "TEST.SHIFT_HEATMAP": "the flip test's one-pixel shift of the flipped heatmaps",
    "TEST.USE_GT_BBOX": "ground-truth boxes (true) or the detector's (false)",
    "TEST.IMAGE_THRE": "the detector boxes' minimum score",
    "TEST.OKS_THRE": "the OKS NMS threshold", "TEST.IN_VIS_THRE": "the joint score that counts in rescoring",
    "TEST.COCO_BBOX_FILE": "the detector results file",
    "TEST.MODEL_FILE": "eval's checkpoint when --checkpoint is not given",
}

NOTED: Dict[str, str] = {
    "OUTPUT_DIR": "outputs go to --out", "LOG_DIR": "logs go to --out",
    "DATA_DIR": "the data is --data / DATASET.ROOT",
    "GPUS": "one process per GPU: torchrun --nproc_per_node N -m hrfast train",
    "PRINT_FREQ": "tqdm shows the loss and speed at every step",
    "RANK": "torchrun sets the ranks",
    "TRAIN.GAMMA1": "unused by the official code as well", "TRAIN.GAMMA2": "unused by the official code as well",
    "TRAIN.RESUME": "use --resume (or AUTO_RESUME)", "TRAIN.CHECKPOINT": "--resume reads OUT/checkpoint.pth",
    "TEST.NMS_THRE": "unused by the official COCO evaluation as well (TEST.OKS_THRE is its NMS threshold)",
    "TEST.BBOX_THRE": "unused by the official COCO evaluation as well",
    # the official experiment files turn these on; hrfast draws predictions with `hrfast predict`
    "DEBUG.DEBUG": "no debug batches are drawn; hrfast predict draws predictions",
    "DEBUG.SAVE_BATCH_IMAGES_GT": "as DEBUG.DEBUG", "DEBUG.SAVE_BATCH_IMAGES_PRED": "as DEBUG.DEBUG",
    "DEBUG.SAVE_HEATMAPS_GT": "as DEBUG.DEBUG", "DEBUG.SAVE_HEATMAPS_PRED": "as DEBUG.DEBUG",
}

# key -> (accepted values, what to do instead)
REFUSED: Dict[str, Tuple[Tuple[Any, ...], str]] = {
    "MODEL.NAME": (("pose_hrnet",), "train, eval and predict run the pose net, and with --task cls, face or seg "
                                    "cls_hrnet, hrnet (faces) or seg_hrnet; hrfast.build_model(yaml) builds and "
                                    "loads each"),
    "MODEL.TAG_PER_JOINT": ((True,), "pose_hrnet predicts one heatmap per joint"),
    "MODEL.TARGET_TYPE": (("gaussian",), "the targets are Gaussian heatmaps (HRFAST.TARGET_ENCODING: msra or udp)"),
    "MODEL.STYLE": (("pytorch",), "STYLE concerns the official ResNet baselines, not HRNet"),
    "DATASET.DATA_FORMAT": (("jpg", "png"), "images are read from files; unzip a zipped dataset first"),
    "DATASET.HYBRID_JOINTS_TYPE": (("",), "joint sets are described by DATASET.FLIP_PAIRS / SIGMAS / ..."),
    "DATASET.SELECT_DATA": ((False,), "hrfast trains on every usable annotation"),
    "DATASET.COLOR_RGB": ((True,), "the images go in as RGB, as the official checkpoints were trained"),
    "TEST.SOFT_NMS": ((False,), "hrfast runs the official hard OKS NMS (TEST.OKS_THRE)"),
}

# the keys under these are checked key by key elsewhere (the stage layouts, hrfast's own section)
STRUCTURED = ("MODEL.EXTRA.STAGE1", "MODEL.EXTRA.STAGE2", "MODEL.EXTRA.STAGE3", "MODEL.EXTRA.STAGE4", "HRFAST")


def policy(key: str) -> str:
    """"acts", "noted", "refused" or "structured" for a dotted key of the schema."""
    if any(key == s or key.startswith(s + ".") for s in STRUCTURED):
        return "structured"
    found = [name for name, table in (("acts", ACTS), ("noted", NOTED), ("refused", REFUSED)) if key in table]
    if len(found) != 1:
        raise KeyError(f"config key {key} has {'no' if not found else 'more than one'} policy")
    return found[0]


def get_dotted(cfg, dotted: str):
    """The value of ``SECTION.KEY`` in a nested config."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def refuse_unsupported(cfg, where: str, error) -> None:
    """Raise ``error`` (ConfigError) for the first REFUSED key whose value is not accepted."""
    for key, (accepted, instead) in REFUSED.items():
        value = get_dotted(cfg, key)
        if isinstance(value, str):
            ok = value.lower() in [str(a).lower() for a in accepted]
        else:
            ok = value in accepted
        if not ok:
            allowed = " or ".join(repr(a) for a in accepted)
            raise error(f"{where}: {key}: {value!r} is not supported ({instead}); use {allowed}")


def note_ignored(cfg, defaults, where: str) -> None:
    """One warning naming the NOTED keys that ``cfg`` sets to other values than ``defaults``,
    and why each has no effect."""
    changed = []
    for key, why in NOTED.items():
        value, default = get_dotted(cfg, key), get_dotted(defaults, key)
        if value != default and not (isinstance(default, tuple) and tuple(value) == default):
            changed.append(f"{key} ({why})" if not why.startswith("as ") else key)
    if changed:
        warnings.warn(f"{where}: these keys have no effect in hrfast: {'; '.join(changed)}", UserWarning,
                      stacklevel=3)
