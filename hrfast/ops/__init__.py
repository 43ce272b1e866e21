"""Custom ops: thin typed fronts over ``torch.ops.hrfast`` with their reference twins.

Importing this package registers the fused exchange-unit backends (``triton``, ``auto``) with
``hrfast.models.backends``.
"""
from . import exchange  # noqa: F401  (registers the fused backends)
from .decode import decode_heatmaps, decode_heatmaps_ref, final_preds, heatmap_to_image
from .nms import COCO_SIGMAS, oks_nms, oks_nms_ref, rescore
from .targets import gaussian_targets, gaussian_targets_ref

__all__ = ["gaussian_targets", "gaussian_targets_ref", "decode_heatmaps", "decode_heatmaps_ref",
           "final_preds", "heatmap_to_image", "oks_nms", "oks_nms_ref", "rescore", "COCO_SIGMAS"]
