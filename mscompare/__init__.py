"""mscompare: compare the paper's multi-scale separable units with AlexNet-, MobileNet- and GoogLeNet-style units."""
from mscompare.config import DATASETS, ModelConfig, config_for
from mscompare.models import MODELS, build_model, count_params, register_model, unit_params

__all__ = ["DATASETS", "MODELS", "ModelConfig", "build_model", "config_for", "count_params", "register_model", "unit_params"]
__version__ = "0.1.0"
