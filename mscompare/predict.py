"""Predictions from shipped checkpoints or finished runs: preprocessing uploads and drawings (decoded by images)."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mscompare import ood
from mscompare.checkpoints import SHIPPED, CheckpointError, load_checkpoint, read_manifest
from mscompare.images import GRAY_MODES, ImageError, open_image, to_rgb


class PredictionError(RuntimeError):
    """A model gave no usable answer for an image (a non-finite output)."""


def display_copy(im: Image.Image, max_side: int = 1024, max_aspect: int = 20) -> Image.Image:
    """An RGB (or L for grayscale modes) copy that st.image can encode whatever mode Pillow decoded: at most
    max_side pixels long, and letterboxed in grey to at most max_aspect:1 (st.image fails on 4000x3)."""
    out = to_rgb(im)
    if im.mode in GRAY_MODES or im.mode.startswith("I;16"):
        out = out.convert("L")
    if max(out.size) > max_side:
        scale = max_side / max(out.size)
        out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))),
                         Image.Resampling.LANCZOS)
    w, h = out.size
    if max(w, h) > max_aspect * min(w, h):
        box = (max(w, -(-h // max_aspect)), max(h, -(-w // max_aspect)))
        canvas = Image.new(out.mode, box, 128 if out.mode == "L" else (128, 128, 128))
        canvas.paste(out, ((box[0] - w) // 2, (box[1] - h) // 2))
        out = canvas
    return out


def needs_invert(gray: np.ndarray) -> bool:
    """A light background (MNIST digits are light on black): judged by the border pixels."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def preprocess(im: Image.Image, channels: int, size: int, invert: str = "auto") -> np.ndarray:
    """PIL image -> uint8 array (size, size, channels) in the training data's format; small images are enlarged."""
    rgb = to_rgb(im)
    if channels == 1:
        g = rgb.convert("L")
        if invert == "yes" or (invert == "auto" and needs_invert(np.asarray(g))):
            g = ImageOps.invert(g)
        if g.size != (size, size):  # MNIST style: fit the ink's bounding box into 20x20, centred in 28x28
            box = g.point(lambda v: 255 if v > 40 else 0).getbbox() or (0, 0, *g.size)
            g = g.crop(box)
            inner = round(size * 20 / 28)
            scale = inner / max(g.size)  # enlarges small images too (thumbnail() only shrinks)
            g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.Resampling.LANCZOS)
            canvas = Image.new("L", (size, size), 0)
            canvas.paste(g, ((size - g.width) // 2, (size - g.height) // 2))
            g = canvas
        return np.asarray(g)[..., None]
    if invert == "yes":
        rgb = ImageOps.invert(rgb)
    rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)  # centre-crop to square, then resize
    return np.asarray(rgb)


def canvas_image(rgba, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """The drawing pad's RGBA array (H, W, 4) as the image the user saw, decoded like an upload.

    Transparent pixels are the pad's `background` (black: light ink on black, like MNIST), not the white paper
    that to_rgb() puts under a transparent upload; the composite is PNG-encoded and goes through open_image(),
    so a drawing and the same picture uploaded as a PNG give the same preprocess() result."""
    a = np.asarray(rgba) if rgba is not None else np.zeros((0, 0, 4))
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] * a.shape[1] == 0:
        raise ImageError(f"the drawing pad sent no image (an array of shape {a.shape})")
    if a.dtype != np.uint8:  # a float canvas in 0..1 or 0..255
        a = np.nan_to_num(a.astype(np.float64))
        a = np.clip(np.rint(a * 255 if a.max(initial=0) <= 1 else a), 0, 255).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(a))
    if im.mode == "RGBA":
        bg = Image.new("RGBA", im.size, (*background, 255))
        im = Image.alpha_composite(bg, im).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return open_image(buf.getvalue(), name="drawing")


def _check_meta(path, cfg, meta: dict) -> None:
    """What predict() relies on: class names and a normalization per input channel."""
    if len(meta.get("classes") or []) != cfg.num_classes:
        raise CheckpointError(f"{path} has no class names for its {cfg.num_classes} outputs")
    norm = meta.get("norm") or {}
    for k in ("mean", "std"):
        v = norm.get(k)
        if not isinstance(v, list) or len(v) != cfg.in_channels or \
                not all(isinstance(x, (int, float)) and np.isfinite(x) for x in v):
            raise CheckpointError(f"{path} has no usable normalization {k} for {cfg.in_channels} channel(s)")
    if not all(s > 0 for s in norm["std"]):
        raise CheckpointError(f"{path} has a normalization std <= 0")


def _check_for_prediction(path: Path, entry: dict, cfg, meta: dict) -> None:
    """What predict() relies on: the manifest's model, class names and a normalization per input channel."""
    if cfg.model != entry["model"]:
        raise CheckpointError(f"{path} holds a {cfg.model} model but the manifest says {entry['model']}")
    _check_meta(path, cfg, meta)


def load_set(name: str, root: str | Path = SHIPPED) -> dict[str, tuple]:
    """All shipped checkpoints of one set ('mnist' or 'cifar10'), each verified against the manifest's sha256:
    model name -> (model, cfg, meta). Each file is read and hashed once; the page caches the result."""
    root = Path(root)
    try:
        entries = [e for e in read_manifest(root) if e["dataset"] == name]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{root / 'manifest.json'} is not a valid manifest: {e}") from e
    if not entries:
        raise CheckpointError(f"no shipped checkpoints for {name!r} in {root / 'manifest.json'}")
    out = {}
    for e in entries:
        path = root / e["file"]
        if not path.resolve().is_relative_to(root.resolve()):
            raise CheckpointError(f"the manifest names {e['file']}, outside {root}")
        if not e.get("sha256"):
            raise CheckpointError(f"the manifest has no sha256 for {path}")
        model, cfg, meta = load_checkpoint(path, sha256=e["sha256"])
        _check_for_prediction(path, e, cfg, meta)
        out[e["model"]] = (model, cfg, meta)
    return out


def run_label(row: dict) -> str:
    """How a run's model is named on the page and in the CLI: 'ms_add (run 1a2b3c)' (the id's random tail)."""
    return f"{row['model']} (run {row['id'].rsplit('-', 1)[-1]})"


def _run_checkpoint(store, row: dict) -> Path | None:
    """The run's checkpoint file; a relative path stored by a trainer in another folder is looked up in the
    store's checkpoints/ folder too."""
    if not row.get("checkpoint"):
        return None
    path = Path(row["checkpoint"])
    if not path.is_file() and not path.is_absolute():
        alt = Path(store.dir) / "checkpoints" / path.name
        path = alt if alt.is_file() else path
    return path


def finished_runs(store) -> list[dict]:
    """Runs that can predict: done, with their checkpoint file present; newest first."""
    rows = [r for r in store.list(status="done") if (p := _run_checkpoint(store, r)) is not None and p.is_file()]
    return sorted(rows, key=lambda r: r["created"] or 0, reverse=True)


def load_runs(store, ids: list[str]) -> dict[str, tuple]:
    """Checkpoints of finished runs from the run store: run_label(row) -> (model, cfg, meta), in the order
    given. An unknown id, an unfinished run or a missing checkpoint file is a CheckpointError naming the run."""
    if not ids:
        raise CheckpointError("no runs chosen")
    out = {}
    for rid in dict.fromkeys(ids):
        row = store.get(rid)
        if row is None:
            raise CheckpointError(f"no run {rid!r} in {store.path}")
        if row["status"] != "done":
            raise CheckpointError(f"run {rid} is {row['status']}, not done: only a finished run has a checkpoint")
        path = _run_checkpoint(store, row)
        if path is None:
            raise CheckpointError(f"run {rid} saved no checkpoint")
        if not path.is_file():
            raise CheckpointError(f"run {rid}'s checkpoint {path} is missing")
        model, cfg, meta = load_checkpoint(path)
        _check_meta(path, cfg, meta)
        label = run_label(row)
        out[label if label not in out else f"{row['model']} (run {rid})"] = (model, cfg, meta)
    return out


def normalize(x_uint8_nhwc: torch.Tensor, meta: dict) -> torch.Tensor:
    """uint8 N x H x W x C -> the normalized float32 N x C x H x W tensor a checkpoint's model (and its ONNX
    export) takes: (x / 255 - mean) / std per channel, with the checkpoint's meta["norm"]."""
    mean = torch.tensor(meta["norm"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta["norm"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return ((x_uint8_nhwc.permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous()


def model_input(arr: np.ndarray, meta: dict) -> torch.Tensor:
    """A preprocess() array -> the normalized (1, C, H, W) float tensor the model takes."""
    return normalize(torch.from_numpy(arr.copy())[None], meta)


@torch.inference_mode()
def predict(models: dict[str, tuple], im: Image.Image, invert: str = "auto", k: int = 3) -> dict:
    """Top-k per model, the preprocessed input each model saw, each model's latency in ms, and how far that input
    lies from the model's training data (ood.check; None without a reference for its dataset).
    Every number is finite: a model whose output is NaN or infinite raises PredictionError."""
    out: dict = {"predictions": {}, "latency_ms": {}, "inputs": {}, "ood": {}}
    for name, (model, cfg, meta) in models.items():
        arr = preprocess(im, cfg.in_channels, cfg.input_size, invert)
        x = model_input(arr, meta)
        t = time.perf_counter()
        logits = model(x)
        out["latency_ms"][name] = (time.perf_counter() - t) * 1000
        probs = logits.softmax(1)[0]
        if not (torch.isfinite(logits).all() and torch.isfinite(probs).all()):
            raise PredictionError(f"model {name} gave a non-finite output (NaN or infinity) for this image; "
                                  "its checkpoint may be damaged")
        p, i = probs.topk(min(k, len(probs)))
        out["predictions"][name] = [{"label": meta["classes"][j], "prob": round(float(q), 4)}
                                    for q, j in zip(p.tolist(), i.tolist())]
        out["inputs"][name] = arr
        out["ood"][name] = ood.check(arr, meta.get("dataset"))
    return out


def predict_files(models: dict[str, tuple], paths: list[str], invert: str = "auto") -> tuple[list, list]:
    """Predict each file; returns (results, [(path, error)]) so one bad file doesn't stop the rest.
    Results hold only finite numbers, so json.dumps(..., allow_nan=False) always works."""
    results, failed = [], []
    for p in paths:
        try:
            res = predict(models, open_image(p), invert)
        except (ImageError, PredictionError, OSError) as e:
            failed.append((p, str(e)))
            continue
        results.append({"image": p, **res})
    return results, failed
