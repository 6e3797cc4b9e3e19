"""The corruption suite: CIFAR-10-C and MNIST-C corruptions at five severities, made deterministically from a seed.

Corruptions act on the [0, 1] image, before the dataset's normalization, and return uint8 images, as the published
suites store them (we round where they truncate). Severity parameters are the published ones: Hendrycks &
Dietterich 2019 (make_cifar_c.py) for colour images, Mu & Gilmer 2019 (mnist-c corruptions.py) for 1-channel
digits, which also get rotation and translation. Where our op differs from theirs it says so below. Random draws
come from one torch.Generator per (seed, corruption, severity), taken over the images in order, CHUNK at a time,
so the corrupted test set depends on the seed and the suite alone, never on the model, the batch or the machine.
"""
from __future__ import annotations

import math
import warnings
import zlib

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

VERSION = 1  # bump when any corruption, parameter or the CHUNK order changes: stored results are then recomputed
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK = 500  # images per random draw

# Severity 1..5 parameters. Noise: sigma / Poisson photons per unit; blur: Gaussian sigma / (disk radius,
# anti-alias sigma); contrast: factor; brightness: added to HSV value; jpeg: quality; pixelate: size factor;
# rotate: radians, random direction; translate: pixels along each axis, random directions.
COLOUR = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "jpeg": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
}
DIGITS = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "jpeg": [25, 18, 15, 10, 7],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "rotate": [0.2, 0.4, 0.6, 0.8, 1.0],
    "translate": [1, 2, 3, 4, 5],
}


def suite(channels: int) -> dict[str, list]:
    """The corruptions and their severity parameters for images of `channels` channels (1: digits)."""
    return DIGITS if channels == 1 else COLOUR


def generator(seed: int, name: str, severity: int) -> torch.Generator:
    """The one generator of a (seed, corruption, severity): crc32, not hash(), so it is the same in every process."""
    return torch.Generator().manual_seed(zlib.crc32(f"{int(seed)}:{name}:{int(severity)}".encode()))


def corrupt(x: torch.Tensor, name: str, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt uint8 NHWC images (a test split's .x) at `severity` (0: the images unchanged) -> uint8 NHWC."""
    table = suite(x.shape[-1])
    if name not in table:
        raise ValueError(f"unknown corruption {name!r} for {x.shape[-1]}-channel images; "
                         f"choose from {', '.join(table)}")
    if severity == 0:
        return x
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 0-{SEVERITIES[-1]}, got {severity}")
    c = table[name][severity - 1]
    gen = gen if gen is not None else generator(0, name, severity)
    img = x.permute(0, 3, 1, 2)
    if name == "jpeg":  # torchvision's JPEG round trip (libjpeg, as PIL's), on the uint8 image
        with warnings.catch_warnings():  # torchvision 0.29 flags its JPEG codec as moving to torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            return F.jpeg(img.contiguous(), int(c)).permute(0, 2, 3, 1).contiguous()
    out = OPS[name](img.float() / 255, c, gen)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _gaussian_noise(x, sigma, gen):
    # torchvision's GaussianNoise draws from the global RNG; the suite's own generator keeps it reproducible
    return x + sigma * torch.randn(x.shape, generator=gen)


def _shot_noise(x, photons, gen):
    return torch.poisson(x * photons, generator=gen) / photons


def _safe_kernel(size: int, x: torch.Tensor) -> int:
    """An odd kernel size no wider than the image allows for reflect padding."""
    return max(1, min(size, 2 * (min(x.shape[-2:]) - 1) + 1)) | 1


def _gaussian_blur(x, sigma, gen):
    # skimage's gaussian (truncate 4) as the suites use it; torchvision pads by reflection where skimage repeats edges
    size = _safe_kernel(2 * int(4 * sigma + 0.5) + 1, x)
    return F.gaussian_blur(x, [size, size], [float(sigma), float(sigma)])


def disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The suites' defocus kernel: a normalized disk, smoothed by a small Gaussian, cropped to where it is non-zero."""
    r = 8 if radius <= 8 else int(radius)
    grid = torch.arange(-r, r + 1, dtype=torch.float32)
    k = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).float()
    k = F.gaussian_blur((k / k.sum())[None, None], [3, 3] if radius <= 8 else [5, 5], [alias_blur, alias_blur])[0, 0]
    keep = k.abs().sum(0) > 0
    lo, hi = int(keep.nonzero().min()), int(keep.nonzero().max())
    half = max(r - lo, hi - r)  # symmetric crop keeps the centre
    return k[r - half:r + half + 1, r - half:r + half + 1]


def _defocus_blur(x, c, gen):
    k = disk(*c)
    n = x.shape[1]
    pad = min(k.shape[0] // 2, min(x.shape[-2:]) - 1)
    k = k[k.shape[0] // 2 - pad:k.shape[0] // 2 + pad + 1, k.shape[0] // 2 - pad:k.shape[0] // 2 + pad + 1]
    xp = nnf.pad(x, (pad, pad, pad, pad), mode="reflect")  # cv2.filter2D's default border (reflect-101)
    return nnf.conv2d(xp, k.expand(n, 1, *k.shape).contiguous(), groups=n)


def _contrast(x, c, gen):
    # torchvision blends towards the image's grey mean; CIFAR-10-C towards each channel's mean (the same for digits)
    return F.adjust_contrast(x, float(c))


def _brightness(x, c, gen):
    """HSV value + c with hue and saturation kept, as the suites do through skimage: each pixel's channels scale
    by V'/V (a black pixel, with no hue, becomes grey V'). For 1-channel images this is x + c."""
    v = x.amax(1, keepdim=True)
    v2 = (v + c).clamp(max=1)
    return torch.where(v > 0, x * v2 / v.clamp(min=1e-12), v2.expand_as(x))


def box_resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """PIL's BOX resampling along one axis as an (n_out, n_in) matrix: each output pixel averages the input pixels
    whose centres fall in its box (one pixel wide in the output, at least one input pixel wide)."""
    scale = n_in / n_out
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    t = ((torch.arange(n_in, dtype=torch.float64) + 0.5)[None, :] - centres[:, None]) / max(scale, 1.0)
    w = ((t > -0.5) & (t <= 0.5)).double()
    return (w / w.sum(1, keepdim=True)).float()


def _pixelate(x, c, gen):
    # the suites' PIL BOX resize down to c times the size, then BOX back up (torch's "area" would blur more)
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    down = torch.einsum("ah,nchw,bw->ncab", box_resize_weights(h, sh), x, box_resize_weights(w, sw))
    return torch.einsum("ha,ncab,wb->nchw", box_resize_weights(sh, h), down, box_resize_weights(sw, w))


def _rotate(x, radians, gen):
    """Each image turned by `radians` about its centre, clockwise or anticlockwise at random, black outside."""
    sign = torch.randint(0, 2, (len(x),), generator=gen) * 2 - 1
    out = torch.empty_like(x)
    for s in (-1, 1):
        m = sign == s
        if m.any():
            out[m] = F.rotate(x[m], s * math.degrees(radians), interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return out


def _translate(x, pixels, gen):
    """Each image shifted by `pixels` along both axes, each direction at random, black where it came from."""
    signs = torch.randint(0, 2, (len(x), 2), generator=gen) * 2 - 1
    out = torch.empty_like(x)
    for sx in (-1, 1):
        for sy in (-1, 1):
            m = (signs[:, 0] == sx) & (signs[:, 1] == sy)
            if m.any():
                out[m] = F.affine(x[m], angle=0.0, translate=[sx * pixels, sy * pixels], scale=1.0, shear=[0.0, 0.0],
                                  fill=0.0)
    return out


OPS = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "gaussian_blur": _gaussian_blur,
       "defocus_blur": _defocus_blur, "contrast": _contrast, "brightness": _brightness, "pixelate": _pixelate,
       "rotate": _rotate, "translate": _translate}
