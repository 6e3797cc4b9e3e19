"""Class-activation maps: where each model finds the evidence for its top class (Grad-CAM from torchcam)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mscompare.predict import model_input

# Grad-CAM's layer, and why, for the paper's unit types. Every type (a new one too) uses its last unit's output, net.units[-1]: the last spatial
# feature map, which the classifier reads after one 2x2 max-pool and the flatten (there is no conv after it),
# and the same point in every network, so the maps of every unit type compare like for like.
TARGET_LAYERS = {
    "alexnet": "units[-1]: the unit's ReLU output (conv 3x3 -> BN -> ReLU)",
    "mobilenet": "units[-1]: the pointwise 1x1 ConvBN's ReLU output, after the depthwise 3x3",
    "googlenet": "units[-1]: the concatenation of all four branches (1x1, 3x3, 5x5, pool); one branch would "
                 "show the evidence of one scale only",
    "ms_concat": "units[-1]: act(norm(x + branches)), after the identity residual; the branches alone "
                 "(scale1/scale2) would leave out what the residual carries to the classifier",
    "ms_add": "units[-1]: act(norm(x + restore(scale1 + scale2))), after the identity residual, as for ms_concat",
}


def target_layer(net: torch.nn.Module) -> torch.nn.Module:
    """The layer Grad-CAM weighs for every unit type: the last unit (see TARGET_LAYERS for why).

    Its map is input_size / 2**units on a side (28x28 MNIST with 2 units: 7x7; 32x32 CIFAR-10 with 3: 4x4)."""
    return net.units[-1]


def class_activation_map(model: torch.nn.Module, arr: np.ndarray, meta: dict,
                         class_idx: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM for one preprocessed input (predict()'s 'inputs' array, H x W x C uint8).

    Returns (heatmap, class index): a float32 H x W map at the preprocessed model-input size (not the
    original image's: preprocessing crops and fits, so the two don't map by a resize), values in [0, 1]
    (torchcam's min-max normalization, then a bilinear enlargement), for `class_idx` or the top class.
    The model is copied first, so the hooks never touch a model that other threads predict with."""
    from torchcam.methods import GradCAM

    with torch.inference_mode(False), torch.enable_grad():  # also when called inside predict()'s inference mode
        net = copy.deepcopy(model).eval()  # normal tensors, even when deep-copied from inference-mode ones
        x = model_input(arr, meta)
        with GradCAM(net, target_layer(net), input_shape=tuple(x.shape[1:])) as extractor:
            scores = net(x)
            if class_idx is None:
                class_idx = int(scores.argmax(1)[0])
            cam = extractor(class_idx, scores)[0]
    cam = torch.nan_to_num(cam.detach().float(), nan=0.0)[:, None]  # (1, 1, h, w)
    heat = F.interpolate(cam, size=arr.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return heat.clamp(0, 1).numpy().astype(np.float32), class_idx


def explain(models: dict[str, tuple], inputs: dict[str, np.ndarray]) -> dict[str, dict]:
    """A map per model for the input it saw (predict()'s 'inputs'): label -> {heatmap, class_index, label}."""
    out = {}
    for name, (model, cfg, meta) in models.items():
        heat, c = class_activation_map(model, inputs[name], meta)
        out[name] = {"heatmap": heat, "class_index": c, "label": meta["classes"][c]}
    return out


def overlay(arr: np.ndarray, heatmap: np.ndarray, min_side: int = 224, alpha: float = 0.5) -> Image.Image:
    """The heatmap (jet colours) over the model's input, enlarged without smoothing to at least `min_side`."""
    from torchcam.utils import overlay_mask

    base = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    scale = max(1, -(-min_side // max(base.size)))
    base = base.resize((base.width * scale, base.height * scale), Image.Resampling.NEAREST)
    return overlay_mask(base, Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32)), "jet", alpha)


def scale_bar(width: int = 240, height: int = 12) -> np.ndarray:
    """The maps' colour scale (jet, as overlay draws them) from no evidence (left) to most (right), as RGB uint8."""
    from matplotlib import colormaps

    row = (colormaps["jet"](np.linspace(0, 1, width))[:, :3] * 255).astype(np.uint8)
    return np.repeat(row[None], height, axis=0)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def write_pngs(out_dir: str | Path, image: str, inputs: dict[str, np.ndarray], maps: dict[str, dict],
               taken: set[str] | None = None) -> dict[str, str]:
    """One PNG per model: <image stem>__<model label>.png in out_dir; `taken` (names already written by this
    call's caller) gets a -2, -3... suffix instead of an overwrite. Returns label -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taken = set() if taken is None else taken
    paths = {}
    for name, m in maps.items():
        stem = f"{_safe(Path(image).stem)}__{_safe(name)}"
        fname, n = f"{stem}.png", 1
        while fname in taken:
            n += 1
            fname = f"{stem}-{n}.png"
        taken.add(fname)
        overlay(inputs[name], m["heatmap"]).save(out / fname)
        paths[name] = str(out / fname)
    return paths
