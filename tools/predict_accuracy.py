"""Check the shipped checkpoints end to end: export real test images as PNG files, run
`python -m mscompare predict --set S --json` on them, and print each model's top-1 accuracy.

    python tools/predict_accuracy.py --set mnist --data-root ../shared/datasets --n 1000
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--set", choices=["mnist", "cifar10"], default="mnist")
ap.add_argument("--data-root", default="../shared/datasets")
ap.add_argument("--n", type=int, default=1000)
a = ap.parse_args()
with np.load(Path(a.data_root) / a.set / "test.npz") as z:
    x, y = z["x"], z["y"]
classes = (Path(a.data_root) / a.set / "classes.txt").read_text().split()
idx = np.random.default_rng(0).choice(len(y), a.n, replace=False)  # CIFAR-10's copy is sorted by class
with tempfile.TemporaryDirectory() as d:
    files = []
    for i in idx:
        f = Path(d) / f"{i}.png"
        Image.fromarray(x[i, ..., 0] if x.shape[-1] == 1 else x[i]).save(f)
        files.append(str(f))
    out = subprocess.run([sys.executable, "-m", "mscompare", "predict", "--set", a.set, "--json", *files],
                         capture_output=True, text=True, check=True).stdout
results = json.loads(out)
truth = {str(Path(d) / f"{i}.png"): classes[y[i]] for i in idx}
for model in results[0]["predictions"]:
    hits = sum(r["predictions"][model][0]["label"] == truth[r["image"]] for r in results)
    print(f"{a.set} {model:10s} top-1 {hits / len(results):.4f} on {len(results)} real test PNGs")
