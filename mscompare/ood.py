"""Is an input far from its model's training data? Seven statistics of the preprocessed image (what the model sees)
against their distribution over the training set: a Mahalanobis distance, and a threshold at a quantile of the
training images' own distances. The references per dataset live in checkpoints/ood.json, written from the real
datasets by tools/ood_reference.py; docs/RESULTS.md has the rates it gives on real test images, photos and noise."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from mscompare.checkpoints import SHIPPED

REFERENCES = SHIPPED / "ood.json"
FEATURES = ("mean", "std", "dark", "bright", "edges", "colour", "edges_per_std")
QUANTILE = 0.999  # of the training images' distances: about 1 in 1,000 real images is over the threshold


def features(arr: np.ndarray) -> np.ndarray:
    """An (H, W, C) uint8 image as preprocess() returns it -> FEATURES: mean and std of all values; the share of
    near-black and near-white pixels (grey level < 0.1 or > 0.9); edge density (mean absolute difference of
    neighbouring pixels, down and across); colourfulness (mean max-min over the channels); and edges per std,
    which is high for noise and low for a smooth picture of the same contrast."""
    x = np.asarray(arr, dtype=np.float32) / 255
    if x.ndim == 2:
        x = x[..., None]
    grey = x.mean(-1)
    std = float(x.std())
    edges = float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()) if min(x.shape[:2]) > 1 \
        else 0.0
    return np.array([x.mean(), std, (grey < 0.1).mean(), (grey > 0.9).mean(), edges,
                     (x.max(-1) - x.min(-1)).mean(), edges / (std + 0.02)], dtype=np.float64)


def fit(train: np.ndarray, quantile: float = QUANTILE) -> dict:
    """The reference of one dataset from its training images' features (an (N, len(FEATURES)) array): their mean,
    spread and inverse covariance (standardised, with a small ridge so that a feature that never varies, such as
    colour on greyscale digits, makes a colour image far instead of breaking the inverse), and the threshold at
    `quantile` of the training images' own distances."""
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(0)
    scale = np.maximum(train.std(0), 1e-3)
    z = (train - mean) / scale
    inv = np.linalg.inv(np.cov(z.T) + 1e-3 * np.eye(z.shape[1]))
    ref = {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(), "inv_cov": inv.tolist(),
           "quantile": quantile, "n_train": len(train)}
    ref["threshold"] = float(np.quantile(distances(train, ref), quantile))
    return ref


def distances(feats: np.ndarray, ref: dict) -> np.ndarray:
    """Mahalanobis distance of each row of `feats` (N, len(FEATURES)) from the reference's training images."""
    z = (np.atleast_2d(feats) - np.asarray(ref["mean"])) / np.asarray(ref["scale"])
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, np.asarray(ref["inv_cov"]), z), 0))


@functools.lru_cache(maxsize=4)
def load_references(path: str | Path = REFERENCES) -> dict[str, dict]:
    """dataset name -> reference; {} where the file is missing or unreadable (then no input gets a hint)."""
    try:
        refs = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in refs.items() if isinstance(v, dict) and v.get("features") == list(FEATURES)}


def check(arr: np.ndarray, dataset: str | None, refs: dict[str, dict] | None = None) -> dict | None:
    """How far a preprocessed input lies from `dataset`'s training images: {"dataset", "distance", "threshold",
    "quantile", "far"}; None where there is no reference for the dataset."""
    refs = load_references() if refs is None else refs
    ref = refs.get(dataset or "")
    if ref is None:
        return None
    d = float(distances(features(arr), ref)[0])
    return {"dataset": dataset, "distance": round(d, 2), "threshold": round(ref["threshold"], 2),
            "quantile": ref["quantile"], "far": bool(d > ref["threshold"])}


def hints(checks: dict[str, dict | None]) -> list[str]:
    """One sentence per dataset whose models got an input far from their training data (predict()'s "ood"),
    for the page to show above the predictions; [] for an input like the training data."""
    far: dict[str, dict] = {}
    for c in checks.values():
        if c and c["far"] and c["distance"] > far.get(c["dataset"], {"distance": -1})["distance"]:
            far[c["dataset"]] = c
    return [f"This image looks unlike the {d} training images (distance {c['distance']:.1f} from them; "
            f"{100 * c['quantile']:.1f}% of them lie within {c['threshold']:.1f}): the {d} models' predictions "
            "below may mean little, however confident." for d, c in far.items()]
