"""Parameter and MAC counts with fvcore: per model, per layer, and the five-model comparison table."""
from __future__ import annotations

from dataclasses import dataclass, field

import warnings

import pandas as pd
import torch

with warnings.catch_warnings():  # fvcore's import scripts a helper with the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis, parameter_count

from mscompare.config import ModelConfig, config_for
from mscompare.models import MODELS, build_model, count_params, unit_params


@dataclass
class Profile:
    """fvcore's result for one model. `macs` is fvcore's "flops": one fused multiply-add counts once."""

    config: ModelConfig
    params: int
    unit_params: int
    macs: int
    layers: pd.DataFrame
    uncounted_ops: dict[str, int] = field(default_factory=dict)


def profile_model(cfg: ModelConfig) -> Profile:
    """Count params and MACs per image for `cfg`, per layer too; ops fvcore can't count are listed, not warned."""
    model = build_model(cfg).eval()
    x = torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size)
    fca = FlopCountAnalysis(model, x)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    by_module = fca.by_module()
    params = parameter_count(model)
    rows = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):  # leaf layers only
            rows.append({"layer": name, "type": type(mod).__name__, "params": params.get(name, 0),
                         "macs": by_module.get(name, 0)})
    layers = pd.DataFrame(rows, columns=["layer", "type", "params", "macs"])
    return Profile(cfg, count_params(model), unit_params(cfg), int(fca.total()), layers,
                   dict(fca.unsupported_ops()))


def compare(dataset: str = "mnist", units: int | None = None, width: int = 32) -> pd.DataFrame:
    """One row per registered model: params, unit params, MACs per image, and ratios to mobilenet."""
    rows = []
    for name in MODELS:
        p = profile_model(config_for(name, dataset, units=units, width=width))
        rows.append({"model": name, "units": p.config.units, "params": p.params, "unit_params": p.unit_params,
                     "macs": p.macs, "uncounted_ops": ", ".join(sorted(p.uncounted_ops))})
    df = pd.DataFrame(rows)
    base = df.set_index("model").loc["mobilenet"]
    df["unit_ratio"] = (df["unit_params"] / base["unit_params"]).round(2)
    df["params_ratio"] = (df["params"] / base["params"]).round(2)
    df["macs_ratio"] = (df["macs"] / base["macs"]).round(2)
    return df
