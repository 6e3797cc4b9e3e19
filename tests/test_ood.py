"""The out-of-distribution hint (mscompare.ood): real digits and drawings get none, photos and noise get one."""
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import ROOT
from mscompare import ood
from mscompare.predict import canvas_image, load_set, predict

SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def mnist_models():
    return load_set("mnist")


@pytest.mark.parametrize("path", sorted((SAMPLES / "mnist").glob("*.png")), ids=lambda p: p.name)
def test_real_mnist_digits_get_no_hint(mnist_models, path):
    result = predict(mnist_models, Image.open(path))
    assert ood.hints(result["ood"]) == []
    assert {c["dataset"] for c in result["ood"].values()} == {"mnist"}  # every model was checked
    assert all(not c["far"] and c["distance"] < c["threshold"] for c in result["ood"].values())


@pytest.mark.parametrize("path", sorted((SAMPLES / "cifar10").glob("*.png")), ids=lambda p: p.name)
def test_a_photo_gets_the_hint_from_the_digit_models(mnist_models, path):
    hints = ood.hints(predict(mnist_models, Image.open(path))["ood"])
    assert len(hints) == 1 and hints[0].startswith("This image looks unlike the mnist training images")


def smooth_noise(seed: int, colour: bool) -> Image.Image:
    z = np.random.default_rng(seed).normal(128, 60, (16, 16, 3) if colour else (16, 16)).clip(0, 255)
    return Image.fromarray(z.astype(np.uint8)).resize((256, 256), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("colour", [False, True])
def test_smooth_noise_gets_the_hint_however_confident_the_models_are(mnist_models, colour):
    result = predict(mnist_models, smooth_noise(1, colour))
    assert len(ood.hints(result["ood"])) == 1
    assert all(c["far"] for c in result["ood"].values())


def pad(draw) -> np.ndarray:
    """What the drawing pad sends: RGBA, transparent except for the white strokes (22 px wide on 280 px)."""
    im = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    draw(ImageDraw.Draw(im))
    return np.asarray(im)


WHITE = (255, 255, 255, 255)
DRAWINGS = {"1": lambda d: d.line([(140, 40), (140, 240)], fill=WHITE, width=22),
            "7": lambda d: d.line([(70, 50), (210, 50), (120, 240)], fill=WHITE, width=22, joint="curve"),
            "0": lambda d: d.ellipse([70, 40, 210, 240], outline=WHITE, width=22)}


@pytest.mark.parametrize("digit", list(DRAWINGS))
def test_a_digit_drawn_on_the_pad_gets_no_hint(mnist_models, digit):
    assert ood.hints(predict(mnist_models, canvas_image(pad(DRAWINGS[digit])))["ood"]) == []


def test_the_shipped_references_cover_both_sets_and_a_thousandth_of_training_images():
    refs = json.loads((ROOT / "checkpoints" / "ood.json").read_text())
    assert set(refs) == {"mnist", "cifar10"}
    for ref in refs.values():
        assert ref["features"] == list(ood.FEATURES) and ref["quantile"] == ood.QUANTILE
        assert ref["n_train"] >= 50_000 and ref["threshold"] > 0


def test_the_threshold_is_the_quantile_of_the_training_images_own_distances():
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(0.5, 0.1, (5000, 6)), np.zeros(5000)])  # the last feature never varies
    ref = ood.fit(train, quantile=0.99)
    far = ood.distances(train, ref) > ref["threshold"]
    assert far.mean() == pytest.approx(0.01, abs=0.002)
    like = np.r_[np.full(6, 0.5), 0.0]
    assert not ood.distances(like, ref)[0] > ref["threshold"]
    assert ood.distances(np.r_[np.full(6, 0.5), 0.2], ref)[0] > ref["threshold"]  # the constant feature moved


def test_no_reference_means_no_check_and_no_hint(tmp_path):
    missing = ood.load_references(tmp_path / "none.json")
    assert missing == {}
    digit = np.zeros((28, 28, 1), np.uint8)
    assert ood.check(digit, "mnist", missing) is None and ood.check(digit, "tinydigits") is None
    assert ood.hints({"a": None, "b": None}) == []
