"""Prediction: image decoding of every format and mode, preprocessing, errors, and the shipped checkpoints."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mscompare.checkpoints import load_checkpoint, read_manifest, sha256
from mscompare.predict import ImageError, load_set, open_image, predict, preprocess

MODELS = {"alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"}
SAMPLES = ROOT / "samples"


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def digit(size=28, fg=255, bg=0, mode="L"):
    """A '1'-like vertical bar, fg on bg."""
    a = np.full((size, size), bg, np.uint8)
    a[size // 5: -size // 5, size // 2 - size // 14: size // 2 + size // 14] = fg
    return Image.fromarray(a, "L").convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "GIF"])
def test_every_format_decodes(fmt):
    im = open_image(encode(digit(40, mode="RGB"), fmt))
    assert im.size == (40, 40)


def test_gif_uses_first_frame():
    frames = [Image.new("L", (20, 20), 0), Image.new("L", (20, 20), 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    im = open_image(data)
    assert np.asarray(im.convert("L")).max() == 0


def test_modes_and_sizes_preprocess_to_the_model_format():
    light = preprocess(digit(200, fg=0, bg=255), 1, 28)  # dark digit on white paper, large
    assert light.shape == (28, 28, 1) and light[0, 0, 0] == 0 and light.max() > 200  # inverted, like MNIST
    rgba = Image.new("RGBA", (50, 30), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (20, 5, 30, 25))
    assert preprocess(rgba, 1, 28).max() > 200  # transparent -> white paper -> inverted
    pal = digit(28).convert("P")
    assert np.array_equal(preprocess(pal, 1, 28)[..., 0], np.asarray(digit(28)))  # 28x28 MNIST-style kept as is
    rgb = preprocess(Image.new("RGB", (300, 100), (255, 0, 0)), 3, 32)
    assert rgb.shape == (32, 32, 3) and tuple(rgb[16, 16]) == (255, 0, 0)
    assert preprocess(digit(28, fg=255, bg=0), 1, 28, invert="yes")[0, 0, 0] == 255


@pytest.mark.parametrize("data,msg", [(b"", "empty"), (b"%PDF-1.4 not an image", "not a readable image"),
                                      (encode(digit(), "PNG")[:60], "corrupt")])
def test_bad_files_are_clear_errors(data, msg):
    with pytest.raises(ImageError, match=msg):
        open_image(data)


def test_oversized_image_is_refused():
    big = encode(Image.new("L", (7000, 7000)), "PNG")
    with pytest.raises(ImageError, match="megapixels"):
        open_image(big)


def test_manifest_matches_the_shipped_files():
    entries = read_manifest()
    assert {(e["dataset"], e["model"]) for e in entries} == {(d, m) for d in ("mnist", "cifar10") for m in MODELS}
    for e in entries:
        path = ROOT / "checkpoints" / e["file"]
        assert sha256(path) == e["sha256"]
        assert path.stat().st_size < 2_000_000
        _, cfg, meta = load_checkpoint(path)
        assert cfg.model == e["model"] and meta["dataset"] == e["dataset"] and meta["iters"] == e["iters"]


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_shipped_models_predict_the_sample_test_images(name):
    models = load_set(name)
    assert set(models) == MODELS
    correct = {m: 0 for m in MODELS}
    files = sorted((SAMPLES / name).glob("*.png"))
    for f in files:
        label = f.stem.rsplit("_", 1)[0]
        res = predict(models, open_image(f))
        for m, top in res["predictions"].items():
            assert len(top) == 3 and top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
            correct[m] += top[0]["label"] == label
    need = 10 if name == "mnist" else 6  # real test images; the CIFAR-10 models reach ~70% accuracy
    assert max(correct.values()) >= need, correct


def test_predict_cli_json(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    imgs = [str(SAMPLES / "mnist" / "7_0.png"), str(SAMPLES / "mnist" / "2_1.png")]
    p = subprocess.run([sys.executable, "-m", "mscompare", "predict", "--set", "mnist", "--json", *imgs],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [o["image"] for o in out] == imgs
    assert set(out[0]["predictions"]) == MODELS
    assert out[0]["predictions"]["ms_add"][0]["label"] == "7" and 0 <= out[0]["predictions"]["ms_add"][0]["prob"] <= 1
    p = subprocess.run([sys.executable, "-m", "mscompare", "predict", "--set", "mnist", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "bad.png" in p.stderr and "Traceback" not in p.stderr
