"""hrfast: a fast, checkpoint-compatible HRNet for human pose estimation."""
from . import ops
from ._extension import HAS_EXTENSION
from .config import Config, ConfigError, available_configs, get_config, load_config
from .deploy import export, optimize
from .models import HRNet, build_model
from .ops.exchange import register_fused_backends
from .predictor import PoseEstimator
from .weights import load_pose_model as load_checkpoint

__version__ = "0.1.0"

register_fused_backends()   # the 'triton' and 'auto' backends of HRNet(backend=...)

__all__ = ["HRNet", "build_model", "PoseEstimator", "optimize", "export", "ops", "Config", "ConfigError",
           "available_configs", "get_config", "load_config", "load_checkpoint",
           "HAS_EXTENSION", "__version__"]
