"""Typed settings: a :class:`~hrfast.config.Config` read once, at the edge, into small frozen
parts (model, data, train, test, runtime), so that each function takes the part it needs.

``settings_of(cfg)`` is the only place where the engine reads the config's keys; the key each
field comes from is named beside it. Lists become tuples, numbers the type the code uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Tuple, Union

from .config import Config, model_spec
from .data.coco import Augmentation

Size = Tuple[int, int]


@dataclass(frozen=True)
class ModelSettings:
    """The network and where its first weights come from."""
    spec: Mapping[str, Any]             # model_spec(cfg): MODEL.NUM_JOINTS, MODEL.EXTRA.*
    init_weights: bool                  # MODEL.INIT_WEIGHTS
    pretrained: str                     # MODEL.PRETRAINED
    pretrained_layers: Tuple[str, ...]  # MODEL.EXTRA.PRETRAINED_LAYERS


@dataclass(frozen=True)
class DataSettings:
    """Where the datasets live and how samples and targets are made."""
    kind: str                           # DATASET.DATASET: coco or mpii
    root: str                           # DATASET.ROOT
    train_set: str                      # DATASET.TRAIN_SET
    test_set: str                       # DATASET.TEST_SET
    train_ann: str                      # DATASET.TRAIN_ANN
    train_images: str                   # DATASET.TRAIN_IMAGES
    test_ann: str                       # DATASET.TEST_ANN
    test_images: str                    # DATASET.TEST_IMAGES
    image_size: Size                    # MODEL.IMAGE_SIZE, (width, height) input pixels
    heatmap_size: Size                  # MODEL.HEATMAP_SIZE, (width, height) heatmap pixels
    sigma: float                        # MODEL.SIGMA, heatmap pixels
    num_joints: int                     # MODEL.NUM_JOINTS
    encoding: str                       # HRFAST.TARGET_ENCODING: msra or udp
    augmentation: Augmentation          # DATASET.FLIP, SCALE_FACTOR, ROT_FACTOR, *HALF_BODY
    use_joint_weights: bool             # LOSS.USE_DIFFERENT_JOINTS_WEIGHT
    flip_pairs: Tuple[Tuple[int, int], ...]   # DATASET.FLIP_PAIRS (empty: the set's own)
    sigmas: Tuple[float, ...]           # DATASET.SIGMAS
    joint_weights: Tuple[float, ...]    # DATASET.JOINT_WEIGHTS
    upper_body: Tuple[int, ...]         # DATASET.UPPER_BODY
    max_train_images: int               # HRFAST.MAX_TRAIN_IMAGES (0: all)
    seed: int                           # HRFAST.SEED, for the augmentation's streams
    use_gt_bbox: bool                   # TEST.USE_GT_BBOX
    bbox_file: str                      # TEST.COCO_BBOX_FILE
    image_thre: float                   # TEST.IMAGE_THRE

    def keypoint_overrides(self) -> dict:
        """The keypoint keys as COCOKeypoints arguments (None where the config leaves them empty)."""
        return {"flip_pairs": list(self.flip_pairs) or None, "sigmas": list(self.sigmas) or None,
                "joint_weights": list(self.joint_weights) or None, "upper_body": list(self.upper_body) or None}


@dataclass(frozen=True)
class LossSettings:
    """The heatmap loss: plain MSE or its hardest joints, from target maps or the joints."""
    use_ohkm: bool                      # LOSS.USE_OHKM
    topk: int                           # LOSS.TOPK
    use_target_weight: bool             # LOSS.USE_TARGET_WEIGHT
    from_joints: bool                   # HRFAST.FUSED_LOSS: joints_mse_loss, no target maps


@dataclass(frozen=True)
class TrainSettings:
    """The optimizer, its schedule and the training step."""
    optimizer: str                      # TRAIN.OPTIMIZER
    lr: float                           # TRAIN.LR
    momentum: float                     # TRAIN.MOMENTUM (SGD)
    weight_decay: float                 # TRAIN.WD (SGD, AdamW)
    nesterov: bool                      # TRAIN.NESTEROV (SGD)
    lr_step: Tuple[int, ...]            # TRAIN.LR_STEP, epochs
    lr_factor: float                    # TRAIN.LR_FACTOR
    schedule: str                       # HRFAST.LR_SCHEDULE: step or cosine
    warmup_epochs: int                  # HRFAST.WARMUP_EPOCHS
    begin_epoch: int                    # TRAIN.BEGIN_EPOCH
    end_epoch: int                      # TRAIN.END_EPOCH
    batch_size: int                     # TRAIN.BATCH_SIZE_PER_GPU
    shuffle: bool                       # TRAIN.SHUFFLE
    loss: LossSettings                  # LOSS.*
    amp: str                            # HRFAST.AMP: none, bf16 or fp16
    ema: float                          # HRFAST.EMA, decay per step (0: off)
    grad_clip: float                    # HRFAST.GRAD_CLIP (0: off)
    fused_optimizer: bool               # HRFAST.FUSED_OPTIMIZER
    targets_on_device: bool             # HRFAST.TARGETS_ON_DEVICE
    compile: bool                       # HRFAST.COMPILE
    sync_bn: bool                       # HRFAST.SYNC_BN
    val_every: int                      # HRFAST.VAL_EVERY, epochs
    auto_resume: bool                   # AUTO_RESUME


@dataclass(frozen=True)
class TestSettings:
    """Evaluation: the flip test, decoding, rescoring and NMS."""
    __test__ = False                    # not a pytest class
    batch_size: int                     # TEST.BATCH_SIZE_PER_GPU
    flip_test: bool                     # TEST.FLIP_TEST
    shift_heatmap: bool                 # TEST.SHIFT_HEATMAP
    post_process: bool                  # TEST.POST_PROCESS
    decode: str                         # HRFAST.DECODE
    oks_thre: float                     # TEST.OKS_THRE
    in_vis_thre: float                  # TEST.IN_VIS_THRE
    model_file: str                     # TEST.MODEL_FILE


@dataclass(frozen=True)
class CudnnSettings:
    """torch.backends.cudnn's switches (no effect on the CPU)."""
    benchmark: bool                     # CUDNN.BENCHMARK
    deterministic: bool                 # CUDNN.DETERMINISTIC
    enabled: bool                       # CUDNN.ENABLED


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how the work runs, whatever the task."""
    backend: str                        # HRFAST.BACKEND
    seed: int                           # HRFAST.SEED
    deterministic: bool                 # HRFAST.DETERMINISTIC
    channels_last: bool                 # HRFAST.CHANNELS_LAST
    fused_bn: bool                      # HRFAST.FUSED_BN: BN + residual + ReLU on hrfast.ops.bn_act (CPU)
    native_wgrad: bool                  # HRFAST.NATIVE_WGRAD: 3x3 weight gradients on hrfast.ops.conv3x3
    workers: Union[str, int]            # WORKERS: auto or a count
    pin_memory: bool                    # PIN_MEMORY
    cudnn: CudnnSettings                # CUDNN.*


@dataclass(frozen=True)
class Settings:
    """Every part, and the config they were read from (written beside checkpoints)."""
    model: ModelSettings
    data: DataSettings
    train: TrainSettings
    test: TestSettings
    runtime: RuntimeSettings
    config: Config

    def override(self, **changes: Mapping[str, Any]) -> "Settings":
        """These settings with config sections merged in and checked, e.g.
        ``override(TEST={"USE_GT_BBOX": False})``."""
        from .config import merge_config
        return settings_of(merge_config(self.config, changes))


def settings_of(cfg: Union[Config, Settings]) -> Settings:
    """Read ``cfg`` (validated by :func:`hrfast.config.load_config`) into :class:`Settings`."""
    if isinstance(cfg, Settings):
        return cfg
    return Settings(_model(cfg), _data(cfg), _train(cfg), _test(cfg), _runtime(cfg), cfg)


def _model(cfg: Config) -> ModelSettings:
    m = cfg.MODEL
    return ModelSettings(model_spec(cfg), bool(m.INIT_WEIGHTS), str(m.PRETRAINED),
                         tuple(m.EXTRA.PRETRAINED_LAYERS))


def _size(value) -> Size:
    return int(value[0]), int(value[1])


def _data(cfg: Config) -> DataSettings:
    d, m, t = cfg.DATASET, cfg.MODEL, cfg.TEST
    aug = Augmentation(scale_factor=float(d.SCALE_FACTOR), rotation_factor=float(d.ROT_FACTOR),
                       flip=bool(d.FLIP), prob_half_body=float(d.PROB_HALF_BODY),
                       num_joints_half_body=int(d.NUM_JOINTS_HALF_BODY))
    return DataSettings(
        str(d.DATASET), str(d.ROOT), str(d.TRAIN_SET), str(d.TEST_SET), str(d.TRAIN_ANN),
        str(d.TRAIN_IMAGES), str(d.TEST_ANN), str(d.TEST_IMAGES), _size(m.IMAGE_SIZE),
        _size(m.HEATMAP_SIZE), float(m.SIGMA), int(m.NUM_JOINTS), str(cfg.HRFAST.TARGET_ENCODING), aug,
        bool(cfg.LOSS.USE_DIFFERENT_JOINTS_WEIGHT), tuple((int(a), int(b)) for a, b in d.FLIP_PAIRS),
        tuple(float(s) for s in d.SIGMAS), tuple(float(w) for w in d.JOINT_WEIGHTS),
        tuple(int(j) for j in d.UPPER_BODY), int(cfg.HRFAST.MAX_TRAIN_IMAGES), int(cfg.HRFAST.SEED),
        bool(t.USE_GT_BBOX), str(t.COCO_BBOX_FILE), float(t.IMAGE_THRE))


def _train(cfg: Config) -> TrainSettings:
    t, h, loss = cfg.TRAIN, cfg.HRFAST, cfg.LOSS
    return TrainSettings(
        str(t.OPTIMIZER), float(t.LR), float(t.MOMENTUM), float(t.WD), bool(t.NESTEROV),
        tuple(int(s) for s in t.LR_STEP), float(t.LR_FACTOR), str(h.LR_SCHEDULE), int(h.WARMUP_EPOCHS),
        int(t.BEGIN_EPOCH), int(t.END_EPOCH), int(t.BATCH_SIZE_PER_GPU), bool(t.SHUFFLE),
        LossSettings(bool(loss.USE_OHKM), int(loss.TOPK), bool(loss.USE_TARGET_WEIGHT), bool(h.FUSED_LOSS)),
        str(h.AMP), float(h.EMA), float(h.GRAD_CLIP), bool(h.FUSED_OPTIMIZER), bool(h.TARGETS_ON_DEVICE),
        bool(h.COMPILE), bool(h.SYNC_BN), int(h.VAL_EVERY), bool(cfg.AUTO_RESUME))


def _test(cfg: Config) -> TestSettings:
    t = cfg.TEST
    return TestSettings(int(t.BATCH_SIZE_PER_GPU), bool(t.FLIP_TEST), bool(t.SHIFT_HEATMAP), bool(t.POST_PROCESS),
                        str(cfg.HRFAST.DECODE), float(t.OKS_THRE), float(t.IN_VIS_THRE), str(t.MODEL_FILE))


def _runtime(cfg: Config) -> RuntimeSettings:
    h, c = cfg.HRFAST, cfg.CUDNN
    return RuntimeSettings(str(h.BACKEND), int(h.SEED), bool(h.DETERMINISTIC), bool(h.CHANNELS_LAST), bool(h.FUSED_BN),
                           bool(h.NATIVE_WGRAD), cfg.WORKERS, bool(cfg.PIN_MEMORY),
                           CudnnSettings(bool(c.BENCHMARK), bool(c.DETERMINISTIC), bool(c.ENABLED)))

