"""hrfast: a fast, checkpoint-compatible HRNet for human pose estimation."""
from ._extension import HAS_EXTENSION
from .config import Config, ConfigError, available_configs, get_config, load_config
from .models import HRNet
from . import ops
from .deploy import export, optimize
from .predictor import PoseEstimator

__version__ = "0.1.0"

__all__ = ["HRNet", "PoseEstimator", "optimize", "export", "ops", "Config", "ConfigError", "available_configs",
           "get_config", "load_config",
           "HAS_EXTENSION", "__version__"]
