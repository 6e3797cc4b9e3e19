"""Print the numbers in docs/ARCHITECTURE.md from the code: per-unit params and ratios, the readings we rejected."""
import torch
from torch import nn

from mscompare.config import config_for
from mscompare.models import ConvBN, ModelConfig, count_params, list_units, unit_params
from mscompare.profile import compare


class Inception3a(nn.Module):
    """GoogLeNet's inception (3a) proportions scaled to C -> C maps (192 -> 256 in the original): 1x1 64/256,
    3x3 128/256 after a 96/192 reduce, 5x5 32/256 after a 16/192 reduce, pool projection 32/256."""

    def __init__(self, c: int):
        super().__init__()
        b1, b3, b5 = c * 64 // 256, c * 128 // 256, c * 32 // 256
        r3, r5 = c * 96 // 192, max(1, c * 16 // 192)
        self.b1 = ConvBN(c, b1, 1)
        self.b3 = nn.Sequential(ConvBN(c, r3, 1), ConvBN(r3, b3, 3))
        self.b5 = nn.Sequential(ConvBN(c, r5, 1), ConvBN(r5, b5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvBN(c, c - b1 - b3 - b5, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


for width in (32, 64):
    mob = unit_params(ModelConfig(model="mobilenet", width=width))
    print(f"\n### Width {width}: one unit's parameters (BN included) and the ratio to mobilenet ({mob:,})\n")
    print("| unit | params | ratio |\n|---|---|---|")
    for m in list_units():
        p = unit_params(ModelConfig(model=m, width=width))
        print(f"| {m} | {p:,} | {p / mob:.2f} |")
    for m in ("ms_concat", "ms_add"):
        p = unit_params(ModelConfig(model=m, width=width, expand=2))
        print(f"| {m}, expand 2 (N = 2C) | {p:,} | {p / mob:.2f} |")
    p = unit_params(ModelConfig(model="ms_concat", width=width, residual_norm=False))
    print(f"| ms_concat without the residual BN | {p:,} | {p / mob:.2f} |")
    p = count_params(Inception3a(width))
    print(f"| googlenet with inception-3a proportions (reducing 1x1s; rejected) | {p:,} | {p / mob:.2f} |")

print("\n### CIFAR-10, width 32, paper unit counts: whole networks\n")
df = compare("cifar10")
print(df[["model", "units", "params", "macs", "bn_macs", "uncounted_ops"]].to_markdown(index=False))
print("\n### MNIST, width 32: whole networks\n")
print(compare("mnist")[["model", "units", "params", "macs", "bn_macs"]].to_markdown(index=False))
n = config_for("ms_add", "tiny-imagenet")
print(f"\nTiny ImageNet (our choice, the text gives none): {n.units} units, googlenet "
      f"{config_for('googlenet', 'tiny-imagenet').units}")
