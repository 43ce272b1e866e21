"""Custom ops: thin typed fronts over ``torch.ops.hrfast`` with their reference twins.

The pose ops (``targets``, ``decode``, ``nms``) run the C++/CUDA kernels of ``hrfast._C``, and
``bn_act`` (train-mode BN + residual + ReLU) its CPU kernels;
the exchange-unit ops (``conv``, ``batchnorm``, ``branch_sum``) the Triton kernels of
``hrfast.kernels``, and ``exchange`` is the plan that composes them into a fused unit;
``norm_act`` does ``bn_act``'s fusion on those Triton ops for CUDA, and its
``install_norm_act`` picks the form for a model's device.
"""
from .bn_act import bn_act, bn_act_ref
from .decode import decode_heatmaps, decode_heatmaps_ref, final_preds, heatmap_to_image
from .nms import COCO_SIGMAS, oks_nms, oks_nms_ref, rescore
from .norm_act import install_norm_act
from .targets import gaussian_targets, gaussian_targets_ref

__all__ = ["bn_act", "bn_act_ref", "install_norm_act",
           "gaussian_targets", "gaussian_targets_ref", "decode_heatmaps", "decode_heatmaps_ref",
           "final_preds", "heatmap_to_image", "oks_nms", "oks_nms_ref", "rescore", "COCO_SIGMAS"]
