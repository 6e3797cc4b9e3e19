"""The one dataclass that fully describes a model, plus per-dataset input shapes and paper defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Input shape and class count of each built-in dataset.
DATASETS: dict[str, dict] = {
    "mnist": {"in_channels": 1, "input_size": 28, "num_classes": 10},
    "cifar10": {"in_channels": 3, "input_size": 32, "num_classes": 10},
    "svhn": {"in_channels": 3, "input_size": 32, "num_classes": 10},
    "tiny-imagenet": {"in_channels": 3, "input_size": 64, "num_classes": 200},
}

# Units per network as in the paper: 2 on MNIST, 3 on CIFAR-10/SVHN, but GoogLeNet only 2 there.
PAPER_UNITS = {"mnist": 2, "cifar10": 3, "svhn": 3, "tiny-imagenet": 3}
PAPER_GOOGLENET_UNITS = {"mnist": 2, "cifar10": 2, "svhn": 2, "tiny-imagenet": 2}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network exactly; stored in every checkpoint."""

    model: str = "ms_add"
    units: int = 2
    width: int = 32
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    hidden: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        from mscompare.models import MODELS  # local import: registry lives with the builders

        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if not 1 <= self.units <= 4:
            raise ValueError(f"units must be 1-4, got {self.units}")
        if self.width < 8 or self.width % 8:
            raise ValueError(f"width must be a multiple of 8 and >= 8, got {self.width}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def config_for(model: str, dataset: str, units: int | None = None, width: int = 32, **shape) -> ModelConfig:
    """The paper's configuration of `model` on `dataset`: unit count from the paper unless given.

    A user dataset (not in DATASETS) must pass its shape: in_channels, input_size, num_classes.
    """
    if dataset not in DATASETS and not shape:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if units is None:
        table = PAPER_GOOGLENET_UNITS if model == "googlenet" else PAPER_UNITS
        units = table.get(dataset, 2)
    return ModelConfig(model=model, units=units, width=width, **{**DATASETS.get(dataset, {}), **shape})
