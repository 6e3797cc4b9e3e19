"""Predictions from the shipped checkpoints: robust image decoding, MNIST/CIFAR-style preprocessing, top-k."""
from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mscompare.checkpoints import SHIPPED, CheckpointError, load_checkpoint, read_manifest

MAX_BYTES = 20 * 2**20
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """The upload is not a usable image; the message says why."""


def open_image(src: str | Path | bytes) -> Image.Image:
    """Decode PNG/JPEG/BMP/WebP/GIF (first frame) etc. into a loaded PIL image, with clear errors."""
    data = Path(src).read_bytes() if isinstance(src, (str, Path)) else src
    if len(data) == 0:
        raise ImageError("the file is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"the image is {im.width}x{im.height}; the limit is {MAX_PIXELS // 10**6} megapixels")
            im.seek(0)  # first frame of an animation
            im.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(f"not a readable image (PNG, JPEG, BMP, WebP or GIF): {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"the image is corrupt or truncated: {e}") from e
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Any mode -> RGB, with transparency composited onto white."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I;16", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-9) * 255
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def needs_invert(gray: np.ndarray) -> bool:
    """A light background (MNIST digits are light on black): judged by the border pixels."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def preprocess(im: Image.Image, channels: int, size: int, invert: str = "auto") -> np.ndarray:
    """PIL image -> uint8 array (size, size, channels) in the training data's format."""
    rgb = _flatten(im)
    if channels == 1:
        g = rgb.convert("L")
        if invert == "yes" or (invert == "auto" and needs_invert(np.asarray(g))):
            g = ImageOps.invert(g)
        if g.size != (size, size):  # MNIST style: fit the ink's bounding box into 20x20, centred in 28x28
            box = g.point(lambda v: 255 if v > 40 else 0).getbbox() or (0, 0, *g.size)
            g = g.crop(box)
            inner = round(size * 20 / 28)
            g.thumbnail((inner, inner), Image.Resampling.LANCZOS)
            canvas = Image.new("L", (size, size), 0)
            canvas.paste(g, ((size - g.width) // 2, (size - g.height) // 2))
            g = canvas
        return np.asarray(g)[..., None]
    if invert == "yes":
        rgb = ImageOps.invert(rgb)
    rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)  # centre-crop to square, then resize
    return np.asarray(rgb)


def load_set(name: str, root: str | Path = SHIPPED) -> dict[str, tuple]:
    """All shipped checkpoints of one set ('mnist' or 'cifar10'): model name -> (model, cfg, meta)."""
    entries = [e for e in read_manifest(root) if e["dataset"] == name]
    if not entries:
        raise CheckpointError(f"no shipped checkpoints for {name!r} in {Path(root) / 'manifest.json'}")
    return {e["model"]: load_checkpoint(Path(root) / e["file"]) for e in entries}


@torch.inference_mode()
def predict(models: dict[str, tuple], im: Image.Image, invert: str = "auto", k: int = 3) -> dict:
    """Top-k per model, the preprocessed input each model saw, and each model's latency in ms."""
    out: dict = {"predictions": {}, "latency_ms": {}, "inputs": {}}
    for name, (model, cfg, meta) in models.items():
        arr = preprocess(im, cfg.in_channels, cfg.input_size, invert)
        mean = torch.tensor(meta["norm"]["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(meta["norm"]["std"]).view(1, -1, 1, 1)
        x = (torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
        t = time.perf_counter()
        probs = model(x).softmax(1)[0]
        out["latency_ms"][name] = (time.perf_counter() - t) * 1000
        p, i = probs.topk(min(k, len(probs)))
        out["predictions"][name] = [{"label": meta["classes"][j], "prob": round(float(q), 4)}
                                    for q, j in zip(p.tolist(), i.tolist())]
        out["inputs"][name] = arr
    return out


def predict_files(models: dict[str, tuple], paths: list[str], invert: str = "auto") -> tuple[list, list]:
    """Predict each file; returns (results, [(path, error)]) so one bad file doesn't stop the rest."""
    results, failed = [], []
    for p in paths:
        try:
            res = predict(models, open_image(p), invert)
        except (ImageError, OSError) as e:
            failed.append((p, str(e)))
            continue
        results.append({"image": p, **res})
    return results, failed
