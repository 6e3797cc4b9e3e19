"""mscompare: compare the paper's multi-scale separable units with AlexNet-, MobileNet- and GoogLeNet-style units."""
from __future__ import annotations

import importlib

# Loaded on first use, so a process can set its thread policy (mscompare.threads) before torch loads.
_EXPORTS = {"DATASETS": "datasets", "config_for": "config", "preset": "config", "TrainConfig": "config",
            "ModelConfig": "models", "MODELS": "models", "build_model": "models", "count_params": "models",
            "register_unit": "models", "get_unit": "models", "list_units": "models", "unit_params": "models"}
__all__ = sorted(_EXPORTS)
__version__ = "0.2.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mscompare.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mscompare' has no attribute {name!r}")
