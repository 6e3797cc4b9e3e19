"""The training presets table and TrainConfig, with the argument checks all callers share; config_for builds models."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mscompare.datasets import DATASETS
from mscompare.models import MAX_UNITS, ModelConfig, check, get_unit, known_fields


# Training presets, one commented table (airbench style). Missing keys take TrainConfig's defaults.
PRESETS: dict[str, dict] = {
    # The paper's protocol: batch 128, the dataset's iteration count, a test every 100 (Tiny ImageNet:
    # 3,000) iterations. The optimizer is not named in the text: Adam at 1e-3, constant, no augmentation.
    "paper": {},
    # For the app: a few minutes on a 2-core CPU, same optimizer as the paper preset.
    "quick": {"iters": 300, "eval_every": 50},
    # A modern recipe at the paper's budget: SGD-Nesterov with a one-cycle schedule, label smoothing,
    # weight decay, random crops and (3-channel only) flips.
    "modern": {"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4, "schedule": "onecycle",
               "label_smoothing": 0.1, "augment": True},
}
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """How to train; stored with every run so it can be repeated. Invalid values raise ValueError."""

    dataset: str = "mnist"
    data_root: str = "data"
    preset: str = "paper"
    iters: int = 5000
    batch_size: int = 128
    eval_every: int = 100
    eval_subset: int = 2000  # stratified test subset for the curve; the final accuracy uses the whole test set
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    augment: bool = False
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 only where a probe measures it faster)
    seed: int = 0
    threads: int = 0  # intra-op threads; 0 = the thread policy's choice (mscompare.threads)
    image_size: int = 0  # image folders only: resize every image to this square size on load (0 = as stored)
    skip_bad: bool = False  # image folders only: skip corrupt or non-image files and count them

    def __post_init__(self) -> None:
        check([
            (self.iters >= 1, f"iterations must be >= 1, got {self.iters}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.eval_every >= 1, f"eval interval must be >= 1, got {self.eval_every}"),
            (self.eval_subset >= 0, f"eval subset must be >= 0, got {self.eval_subset}"),
            (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
             f"learning rate must be a finite number > 0, got {self.lr}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.optimizer in ("adam", "sgd"), f"optimizer must be adam or sgd, got {self.optimizer!r}"),
            (self.schedule in ("constant", "onecycle"), f"schedule must be constant or onecycle, got {self.schedule!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.threads >= 0, f"threads must be >= 1 (or 0 for the automatic policy), got {self.threads}"),
            (0 <= self.image_size <= 512, f"image size must be 0 (as stored) to 512, got {self.image_size}"),
        ])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**known_fields(cls, d))


def preset(name: str, dataset: str, **overrides) -> TrainConfig:
    """The TrainConfig of preset `name` on `dataset`; overrides that are None are ignored."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    spec = DATASETS.get(dataset)
    base = {"dataset": dataset, "preset": name, "iters": spec.iters if spec else 5000,
            "eval_every": spec.eval_every if spec else 100}
    base.update(PRESETS[name])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def paper_units(model: str, dataset: str) -> int:
    """Units per network for `model` on `dataset`: the paper's count (DATASETS), or 2 for user data."""
    spec = DATASETS.get(dataset)
    return spec.units_for(model) if spec else 2


def config_for(model: str, dataset: str, units: int | None = None, width: int = 32, expand: int = 1,
               **shape) -> ModelConfig:
    """The paper's configuration of `model` on `dataset`: unit count from DATASETS unless given.

    A user dataset (not in DATASETS) must pass its shape: in_channels, input_size, num_classes.
    """
    get_unit(model)
    if dataset not in DATASETS and not shape:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} or pass its shape")
    if units is not None and not 1 <= units <= MAX_UNITS:
        raise ValueError(f"units must be 1-{MAX_UNITS}, got {units}")
    base = DATASETS[dataset].shape if dataset in DATASETS else {}
    return ModelConfig(model=model, units=units or paper_units(model, dataset), width=width, expand=expand,
                       **{**base, **shape})
