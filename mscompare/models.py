"""The five unit types, the registry that names them, and the network that stacks them (paper Table 1)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mscompare.config import ModelConfig

MODELS: dict[str, Callable[[int], nn.Module]] = {}


def register_model(name: str):
    """Register a unit builder `fn(width) -> nn.Module` under a stable name used by CLI, app and checkpoints."""

    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, optionally followed by ReLU; groups=cin makes it depthwise."""

    def __init__(self, cin: int, cout: int, k: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """Depthwise-separable 3x3 conv (paper Eq. 1): depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN [-> ReLU]."""

    def __init__(self, cin: int, cout: int, act: bool = True):
        super().__init__(ConvBN(cin, cin, 3, groups=cin), ConvBN(cin, cout, 1, act=act))


class Inception(nn.Module):
    """GoogLeNet-style unit (Fig. 3c): 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1, concatenated to `width` maps."""

    def __init__(self, width: int, widen: float = 1.5):
        super().__init__()
        b, mid = width // 4, int(width * widen)
        self.b1 = ConvBN(width, b, 1)
        self.b3 = nn.Sequential(ConvBN(width, mid, 1), ConvBN(mid, b, 3))
        self.b5 = nn.Sequential(ConvBN(width, mid, 1), ConvBN(mid, b, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBN(width, width - 3 * b, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class MultiScale(nn.Module):
    """The paper's multi-scale separable unit (Fig. 2): 1x1 to N maps, a 1-SepConv and a 2-SepConv branch,
    merged by concat (method 1, Eq. 2) or addition (method 2, Eq. 3), plus an identity residual."""

    def __init__(self, width: int, merge: str):
        super().__init__()
        n, m = width, width // 2  # N extended maps; m maps per branch and scale
        self.merge = merge
        self.expand = ConvBN(width, n, 1)
        self.scale1 = SepConv(n, m, act=False)
        self.scale2 = nn.Sequential(SepConv(n, m), SepConv(m, m, act=False))
        # Eq. 3 yields m maps; a linear 1x1 restores `width` so the residual stays an identity.
        self.restore = ConvBN(m, width, 1, act=False) if merge == "add" else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        e = self.expand(x)
        g1, g2 = self.scale1(e), self.scale2(e)
        g = torch.cat([g1, g2], dim=1) if self.merge == "concat" else g1 + g2
        return self.act(x + self.restore(g))


@register_model("alexnet")
def alexnet_unit(width: int) -> nn.Module:
    """Standard 3x3 convolution unit (Fig. 3a)."""
    return ConvBN(width, width, 3)


@register_model("mobilenet")
def mobilenet_unit(width: int) -> nn.Module:
    """Depthwise 3x3 + pointwise 1x1 unit (Fig. 3b, Eq. 1)."""
    return SepConv(width, width)


@register_model("googlenet")
def googlenet_unit(width: int) -> nn.Module:
    return Inception(width)


@register_model("ms_concat")
def ms_concat_unit(width: int) -> nn.Module:
    """Method 1: branches concatenated (Eq. 2)."""
    return MultiScale(width, "concat")


@register_model("ms_add")
def ms_add_unit(width: int) -> nn.Module:
    """Method 2: branches added (Eq. 3)."""
    return MultiScale(width, "add")


class Net(nn.Module):
    """Input layer (3x3 conv + 2x2 max-pool), `units` units each followed by 2x2 max-pool, then two FC layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stem = nn.Sequential(ConvBN(cfg.in_channels, w, 3), nn.MaxPool2d(2, ceil_mode=True))
        self.units = nn.ModuleList(MODELS[cfg.model](w) for _ in range(cfg.units))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # 28 -> 14 -> 7 -> 4 -> 2 -> 1: four units fit MNIST
        side = -(-cfg.input_size // 2 ** (cfg.units + 1))
        self.fc1 = nn.Linear(w * side * side, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden, cfg.num_classes)

    def features(self, x):
        x = self.stem(x)
        for unit in self.units:
            x = self.pool(unit(x))
        return x

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def build_model(cfg: ModelConfig) -> Net:
    return Net(cfg)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unit_params(cfg: ModelConfig) -> int:
    """Parameters of one unit at the config's width (what the paper's Table 2 compares)."""
    return count_params(MODELS[cfg.model](cfg.width))
