"""Fit the out-of-distribution references (checkpoints/ood.json) on the real training sets and measure how often the
hint shows on real test images, on photos and on noise; prints the Markdown table that docs/RESULTS.md quotes.

    python tools/ood_reference.py [DATA_ROOT]      (default ../shared/datasets: mnist, cifar10, tiny-imagenet-subset)
"""
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mscompare import ood
from mscompare.predict import load_set, model_input, preprocess

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent.parent / "shared" /
            "datasets")
SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}
N_NOISE = 1000


def as_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)


def model_view(images, dataset: str) -> np.ndarray:
    """Each image as the page's upload path prepares it for `dataset`'s models (preprocess, invert 'auto')."""
    ch, size = SHAPES[dataset]
    return np.stack([preprocess(as_image(np.asarray(a)), ch, size) for a in images])


def smooth_noise(rng, n: int, colour: bool, cells: int) -> list:
    """Gaussian noise on a coarse grid (cells x cells), upsampled bicubically to 128 px: a smooth, photo-sized
    blotch picture with no object in it."""
    out = []
    for _ in range(n):
        z = rng.normal(128, 60, (cells, cells, 3 if colour else 1)).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(z if colour else z[..., 0]).resize((128, 128), Image.Resampling.BICUBIC)
        out.append(np.asarray(im))
    return out


def tiny_imagenet_val(root: Path) -> list:
    with tarfile.open(root / "tiny-imagenet-subset" / "tiny-imagenet-200.tar") as tar:
        return [np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                for m in tar.getmembers() if m.isfile() and "/val/images/" in m.name]


def top1(models: dict, views: np.ndarray) -> np.ndarray:
    """The shipped ms_add model's top-1 probability on each prepared input."""
    model, _, meta = models["ms_add"]
    with torch.inference_mode():
        return np.concatenate([model(torch.cat([model_input(v, meta) for v in views[i:i + 500]])).softmax(1)
                              .max(1).values.numpy() for i in range(0, len(views), 500)])


def main() -> None:
    rng = np.random.default_rng(0)
    data = {d: {s: np.load(ROOT / d / f"{s}.npz")["x"] for s in ("train", "test")} for d in SHAPES}
    photos = tiny_imagenet_val(ROOT)
    noise = {"smooth grey noise": smooth_noise(rng, N_NOISE, False, 16),
             "smooth colour noise": smooth_noise(rng, N_NOISE, True, 16),
             "coarse grey noise": smooth_noise(rng, N_NOISE, False, 4),
             "uniform colour noise": [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(N_NOISE)]}
    refs, rows = {}, []
    for dataset in SHAPES:
        t = time.time()
        feats = np.stack([ood.features(v) for v in model_view(data[dataset]["train"], dataset)])
        refs[dataset] = ref = ood.fit(feats)
        print(f"{dataset}: fitted on {len(feats):,} training images in {time.time() - t:.0f} s, "
              f"threshold {ref['threshold']:.2f}", file=sys.stderr)
        other = "cifar10" if dataset == "mnist" else "mnist"
        sets = {f"{dataset} test (real, in distribution)": data[dataset]["test"],
                f"{other} test": data[other]["test"],
                "Tiny ImageNet val photos": photos, **noise}
        models = load_set(dataset)
        for name, images in sets.items():
            views = model_view(images, dataset)
            far = ood.distances(np.stack([ood.features(v) for v in views]), ref) > ref["threshold"]
            p = top1(models, views)
            rows.append((dataset, name, len(views), far.mean(), np.median(p), (p >= 0.9).mean()))
    out = Path(__file__).resolve().parent.parent / "checkpoints" / "ood.json"
    out.write_text(json.dumps(refs, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    print(f"| models | inputs | n | hint shown | ms_add top-1, median | ms_add top-1 >= 90% |\n|---|---|---|---|---|---|")
    for dataset, name, n, far, med, conf in rows:
        print(f"| {dataset} | {name} | {n:,} | {100 * far:.2f}% | {100 * med:.1f}% | {100 * conf:.1f}% |")


if __name__ == "__main__":
    main()
