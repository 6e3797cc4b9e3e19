"""The model config, the unit registry, the five unit types and the network that stacks them (paper Table 1)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# Bounds shared by the CLI, the app and the library (validated in ModelConfig).
MAX_UNITS = 4
MAX_WIDTH = 512
MAX_EXPAND = 4


def check(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed check (the configs' shared validation)."""
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def known_fields(cls, d: dict) -> dict:
    """The entries of `d` that are fields of dataclass `cls` (stored configs may carry retired fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network exactly; stored in every checkpoint and run."""

    model: str = "ms_add"
    units: int = 2
    width: int = 32
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    hidden: int = 128
    # N/C of the multi-scale units' 1x1 expansion (the paper's "extended feature maps"). 1 keeps N = C,
    # the reading that matches the paper's "only two times MobileNet" parameter claim; see ARCHITECTURE.md.
    expand: int = 1
    # BatchNorm on the multi-scale units' residual sum, before its ReLU. Without it the sums grow unit by unit
    # and FC1's ReLUs die on 200-class 64x64 data (ARCHITECTURE.md). Configs stored before it existed load
    # with False (from_dict), so older checkpoints rebuild exactly.
    residual_norm: bool = True

    def __post_init__(self) -> None:
        get_unit(self.model)  # a clear error naming the registered units
        check([(1 <= self.units <= MAX_UNITS, f"units must be 1-{MAX_UNITS}, got {self.units}"),
               (8 <= self.width <= MAX_WIDTH and self.width % 8 == 0,
                f"width must be a multiple of 8 from 8 to {MAX_WIDTH}, got {self.width}"),
               (self.in_channels in (1, 3), f"in_channels must be 1 or 3, got {self.in_channels}"),
               (8 <= self.input_size <= 512, f"input_size must be 8-512 pixels, got {self.input_size}"),
               (2 <= self.num_classes <= 10000, f"num_classes must be 2-10000, got {self.num_classes}"),
               (1 <= self.hidden <= 4096, f"hidden must be 1-4096, got {self.hidden}"),
               (1 <= self.expand <= MAX_EXPAND, f"expand must be 1-{MAX_EXPAND}, got {self.expand}")])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{"residual_norm": False, **known_fields(cls, d)})


# The unit registry, shaped like torchvision's models/_api.py: name -> builder(cfg) -> nn.Module (C -> C maps).
_UNITS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_unit(name: str):
    """Register a unit builder `fn(cfg) -> nn.Module` under a stable name used by CLI, app and checkpoints.
    A unit that concatenates feature maps does it with cat_channels and a `runs` attribute, so that seeds of
    it can train fused (mscompare.fused); tests/test_fused.py checks every registered unit."""

    def deco(fn):
        if name in _UNITS:
            raise ValueError(f"a unit named {name!r} is already registered ({_UNITS[name].__module__})")
        _UNITS[name] = fn
        return fn

    return deco


def get_unit(name: str) -> Callable[[ModelConfig], nn.Module]:
    if name not in _UNITS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_UNITS)}")
    return _UNITS[name]


def list_units() -> list[str]:
    """Registered unit names in registration order (the order of every table and chart)."""
    return list(_UNITS)


def cat_channels(maps: list[torch.Tensor], runs: int = 1) -> torch.Tensor:
    """Concatenate feature maps along the channels. With `runs` fused runs side by side in the channels
    (mscompare.fused), each run's maps stay together, so the next grouped layer sees its own run only."""
    if runs == 1:
        return torch.cat(maps, dim=1)
    b, _, h, w = maps[0].shape
    return torch.cat([m.reshape(b, runs, -1, h, w) for m in maps], dim=2).reshape(b, -1, h, w)


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

    runs = 1  # fused runs side by side in the channels (cat_channels)

    def __init__(self, width: int, widen: float = 1.5):
        super().__init__()
        b, mid = width // 4, int(width * widen)
        self.b1 = ConvBN(width, b, 1)
        self.b3 = nn.Sequential(ConvBN(width, mid, 1), ConvBN(mid, b, 3))
        self.b5 = nn.Sequential(ConvBN(width, mid, 1), ConvBN(mid, b, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBN(width, width - 3 * b, 1))

    def forward(self, x):
        return cat_channels([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], self.runs)


class MultiScale(nn.Module):
    """The paper's multi-scale separable unit (Fig. 2): 1x1 to N = expand*C maps, a 1-SepConv and a 2-SepConv
    branch of m = C/2 maps each, merged by concat (method 1, Eq. 2) or addition (method 2, Eq. 3), plus an
    identity residual."""

    runs = 1  # fused runs side by side in the channels (cat_channels)

    def __init__(self, width: int, merge: str, expand: int = 1, residual_norm: bool = True):
        super().__init__()
        if merge not in ("concat", "add"):
            raise ValueError(f"merge must be 'concat' or 'add', got {merge!r}")
        n, m = width * expand, width // 2  # N extended maps; m maps per branch and scale
        self.merge = merge
        self.expand = ConvBN(width, n, 1)
        self.scale1 = SepConv(n, m, act=False)
        self.scale2 = nn.Sequential(SepConv(n, m), SepConv(m, m, act=False))
        # Our addition: Eq. 3 yields m maps; a linear 1x1 restores `width` so the residual stays an identity.
        self.restore = ConvBN(m, width, 1, act=False) if merge == "add" else nn.Identity()
        self.norm = nn.BatchNorm2d(width) if residual_norm else nn.Identity()  # our addition, see ModelConfig
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        e = self.expand(x)
        g1, g2 = self.scale1(e), self.scale2(e)
        g = cat_channels([g1, g2], self.runs) if self.merge == "concat" else g1 + g2  # Eq. 2 / Eq. 3
        return self.act(self.norm(x + self.restore(g)))


@register_unit("alexnet")
def alexnet_unit(cfg: ModelConfig) -> nn.Module:
    """Standard 3x3 convolution unit (Fig. 3a)."""
    return ConvBN(cfg.width, cfg.width, 3)


@register_unit("mobilenet")
def mobilenet_unit(cfg: ModelConfig) -> nn.Module:
    """Depthwise 3x3 + pointwise 1x1 unit (Fig. 3b, Eq. 1)."""
    return SepConv(cfg.width, cfg.width)


@register_unit("googlenet")
def googlenet_unit(cfg: ModelConfig) -> nn.Module:
    """Inception module (Fig. 3c), 1x1 paths widened to 1.5C (ARCHITECTURE.md says why)."""
    return Inception(cfg.width)


@register_unit("ms_concat")
def ms_concat_unit(cfg: ModelConfig) -> nn.Module:
    """Method 1: branches concatenated (Eq. 2)."""
    return MultiScale(cfg.width, "concat", cfg.expand, cfg.residual_norm)


@register_unit("ms_add")
def ms_add_unit(cfg: ModelConfig) -> nn.Module:
    """Method 2: branches added (Eq. 3)."""
    return MultiScale(cfg.width, "add", cfg.expand, cfg.residual_norm)


MODELS = _UNITS  # the registry itself, read-only by convention: iterate it or call list_units()


class Net(nn.Module):
    """Input layer (3x3 conv + 2x2 max-pool), `units` units each followed by 2x2 max-pool, then two FC layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stem = nn.Sequential(ConvBN(cfg.in_channels, w, 3), nn.MaxPool2d(2, ceil_mode=True))
        self.units = nn.ModuleList(get_unit(cfg.model)(cfg) for _ in range(cfg.units))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # 28 -> 14 -> 7 -> 4 -> 2 -> 1: four units fit MNIST
        side = -(-cfg.input_size // 2 ** (cfg.units + 1))
        self.fc1 = nn.Linear(w * side * side, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.num_classes)

    def features(self, x):
        x = self.stem(x)
        for unit in self.units:
            x = self.pool(unit(x))
        return x

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def build_model(cfg: ModelConfig) -> Net:
    return Net(cfg)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def uses_expand(name: str) -> bool:
    """Whether unit `name` has an expansion (its size changes with ModelConfig.expand): the multi-scale units."""
    return unit_params(ModelConfig(model=name, width=8, expand=2)) != unit_params(ModelConfig(model=name, width=8))


def unit_params(cfg: ModelConfig) -> int:
    """Parameters of one unit at the config's width (what the paper's Table 2 compares)."""
    return count_params(get_unit(cfg.model)(cfg))
