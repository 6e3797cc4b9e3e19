"""Export the bundled sample images (real MNIST / CIFAR-10 test images) from an npz dataset root."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
out = Path(__file__).resolve().parent.parent / "samples"
for name, n in (("mnist", 10), ("cifar10", 10)):
    with np.load(root / name / "test.npz") as z:
        x, y = z["x"], z["y"]
    classes = (root / name / "classes.txt").read_text().split()
    (out / name).mkdir(parents=True, exist_ok=True)
    for c in range(n):  # the first test image of each class
        i = int(np.flatnonzero(y == c)[0])
        img = x[i, ..., 0] if x.shape[-1] == 1 else x[i]
        Image.fromarray(img).save(out / name / f"{classes[c]}_{i}.png")
