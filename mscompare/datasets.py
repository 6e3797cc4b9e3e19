"""The dataset registry: every fact about a built-in dataset (shape, units, iterations, loader, the paper's numbers).

Adding a built-in dataset is one `register(DatasetSpec(...))` here, plus a loader in loaders.py where
torchvision's classes don't read it. Everything else (the CLI's and the app's choices and help text, presets,
the paper tables, the benchmarks' shapes) reads this registry. A user dataset is any other folder under the data
root and needs no entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mscompare import loaders


@dataclass(frozen=True)
class DatasetSpec:
    """What we know about a built-in dataset before loading it. `units_source` says whether the unit counts
    are the paper's (section 4's text) or our own choice where the text gives none."""

    name: str
    in_channels: int
    input_size: int
    num_classes: int
    units: int  # units per network, every model but googlenet
    googlenet_units: int
    units_source: str  # "paper" | "ours"
    iters: int  # the paper's training iterations at batch 128
    eval_every: int  # "testing is once per training N times"
    loader: object  # finds, reads and downloads the official files: loaders.TorchvisionFiles / TinyImageNetFiles
    mean: tuple = ()  # per-channel train mean on the 0..1 scale, for reference (training measures its own)
    paper_acc: dict = field(default_factory=dict)  # model -> the paper's test accuracy (%), None: no number
    paper_notes: dict = field(default_factory=dict)  # model -> what the text says where it gives no number
    builtin: bool = True

    def units_for(self, model: str) -> int:
        return self.googlenet_units if model == "googlenet" else self.units

    @property
    def shape(self) -> dict:
        return {"in_channels": self.in_channels, "input_size": self.input_size, "num_classes": self.num_classes}

    def summary(self) -> str:
        """One line for help text: shape, classes, units per network and the paper's iterations."""
        src = "" if self.units_source == "paper" else ", our choice"
        return (f"{self.name}: {self.in_channels}x{self.input_size}x{self.input_size}, {self.num_classes} classes, "
                f"{self.units} units ({self.googlenet_units} for googlenet{src}), {self.iters:,} iterations")


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


def get(name: str) -> DatasetSpec | None:
    """The built-in's spec, or None for a user dataset."""
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return list(DATASETS)


# The paper's reported test accuracies (%) are its Tables 3-6.
register(DatasetSpec(
    "mnist", 1, 28, 10, 2, 2, "paper", 5000, 100, loaders.MNIST, (0.1307,),
    paper_acc={"ms_add": 99.03, "ms_concat": 98.99, "mobilenet": 94.59, "alexnet": 97.80, "googlenet": 97.98}))
register(DatasetSpec(
    "cifar10", 3, 32, 10, 3, 2, "paper", 5000, 100, loaders.CIFAR10, (0.4914, 0.4822, 0.4465),
    paper_acc={"ms_concat": 72.4, "ms_add": 71.1, "mobilenet": 65.6, "alexnet": None, "googlenet": None},
    paper_notes={"alexnet": "71.1-72.4 (between methods 2 and 1)", "googlenet": "best, no number"}))
register(DatasetSpec(
    "svhn", 3, 32, 10, 3, 2, "paper", 10000, 100, loaders.SVHN, (0.4377, 0.4438, 0.4728),
    paper_acc={"googlenet": 92.3, "alexnet": 92.0, "ms_concat": 91.6, "ms_add": 91.3, "mobilenet": 90.8}))
# The text gives no unit counts for Tiny ImageNet: we reuse the CIFAR-10/SVHN framework (our choice).
register(DatasetSpec(
    "tiny-imagenet", 3, 64, 200, 3, 2, "ours", 42000, 3000, loaders.TINY_IMAGENET, (0.4802, 0.4481, 0.3975),
    paper_acc={"googlenet": 48.26, "alexnet": 44.25, "mobilenet": 34.53, "ms_concat": None, "ms_add": None},
    paper_notes={"ms_concat": "close to AlexNet", "ms_add": "close to AlexNet"}))
