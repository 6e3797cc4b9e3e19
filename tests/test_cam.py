"""Class-activation maps: size and range on shipped checkpoints, per input and unit type, as PNGs and on the page."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, mscompare_cli
from mscompare.cam import class_activation_map, explain, overlay, target_layer, write_pngs
from mscompare.config import ModelConfig
from mscompare.models import build_model, list_units
from mscompare.images import open_image
from mscompare.predict import load_set, predict

SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def mnist():
    return load_set("mnist")


def maps_for(models, path):
    res = predict(models, open_image(path))
    return res, explain(models, res["inputs"])


@pytest.mark.parametrize("name,size,sample", [("mnist", 28, "7_0.png"), ("cifar10", 32, "cat_3000.png")])
def test_heatmap_has_the_input_size_and_values_in_0_1(name, size, sample):
    models = load_set(name)
    res, maps = maps_for(models, SAMPLES / name / sample)
    assert set(maps) == set(models)
    for m, v in maps.items():
        h = v["heatmap"]
        assert h.shape == (size, size) == res["inputs"][m].shape[:2], m  # the preprocessed model input's size
        assert h.dtype == np.float32 and np.isfinite(h).all()
        assert h.min() >= 0 and h.max() <= 1 and h.max() > 0.5, (m, h.min(), h.max())
        assert v["label"] == res["predictions"][m][0]["label"]  # the evidence for the top class


def test_heatmap_differs_between_inputs(mnist):
    _, seven = maps_for(mnist, SAMPLES / "mnist" / "7_0.png")
    _, two = maps_for(mnist, SAMPLES / "mnist" / "2_1.png")
    for m in mnist:
        assert (seven[m]["label"], two[m]["label"]) == ("7", "2"), m
        assert np.abs(seven[m]["heatmap"] - two[m]["heatmap"]).max() > 0.2, m


def test_the_shared_model_is_left_as_it_was(mnist):
    model, cfg, meta = mnist["ms_add"]
    res = predict(mnist, open_image(SAMPLES / "mnist" / "3_18.png"))
    h1, c1 = class_activation_map(model, res["inputs"]["ms_add"], meta)
    h2, c2 = class_activation_map(model, res["inputs"]["ms_add"], meta, class_idx=c1)
    assert c1 == c2 and np.array_equal(h1, h2)  # deterministic
    assert all(p.grad is None for p in model.parameters())
    assert not any(mod._forward_hooks or mod._backward_hooks for mod in model.modules())
    assert not model.training
    with torch.inference_mode():  # called from inside predict()'s inference mode it still has gradients
        h3, _ = class_activation_map(model, res["inputs"]["ms_add"], meta)
    assert np.array_equal(h1, h3)


@pytest.mark.parametrize("unit", list_units())
def test_every_unit_type_has_a_target_layer_and_a_map(unit):
    torch.manual_seed(0)
    cfg = ModelConfig(model=unit, units=3, width=16, in_channels=3, input_size=40, num_classes=5)
    net = build_model(cfg).eval()
    assert target_layer(net) is net.units[-1]
    arr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    h, c = class_activation_map(net, arr, {"norm": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    assert h.shape == (40, 40) and 0 <= h.min() and h.max() <= 1 and 0 <= c < 5


def test_overlay_and_pngs(tmp_path, mnist):
    res, maps = maps_for(mnist, SAMPLES / "mnist" / "7_0.png")
    im = overlay(res["inputs"]["alexnet"], maps["alexnet"]["heatmap"])
    assert im.mode == "RGB" and im.size == (224, 224)
    taken = set()
    first = write_pngs(tmp_path, "a/7_0.png", res["inputs"], maps, taken)
    again = write_pngs(tmp_path, "b/7_0.png", res["inputs"], maps, taken)  # same file name, other folder
    assert len(set(first.values()) | set(again.values())) == 10 and len(list(tmp_path.glob("*.png"))) == 10
    assert first["ms_add"].endswith("7_0__ms_add.png") and again["ms_add"].endswith("7_0__ms_add-2.png")


def test_cli_cam_writes_one_png_per_image_and_model(tmp_path):
    imgs = [str(SAMPLES / "mnist" / "7_0.png"), str(SAMPLES / "mnist" / "2_1.png")]
    out = tmp_path / "cams"
    p = mscompare_cli("predict", "--set", "mnist", "--cam", out, "--json", *imgs, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 * 5
    for r in res:
        assert set(r["cam"]) == set(r["predictions"])
        for path in r["cam"].values():
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size == (224, 224)
    p = mscompare_cli("predict", "--set", "mnist", "--cam", out, imgs[0], cwd=ROOT)
    assert p.returncode == 0 and "map for 7" in p.stdout, p.stderr


def test_predict_page_cam_view(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/predict.py").run()
    next(r for r in at.radio if r.label == "Input").set_value("Sample").run()
    next(s for s in at.selectbox if s.label == "Sample test image").set_value("7_0.png").run()
    assert not at.exception and len(at.get("image")) == 6  # the maps only when asked for
    toggle = next(t for t in at.toggle if t.label == "Show class-activation maps")
    toggle.set_value(True).run()
    assert not at.exception and not at.error and not at.warning, [e.value for e in at.exception]
    images = at.get("image")
    assert len(images) == 12  # the sample, the maps' colour scale, 5 model inputs, 5 maps
    assert sum("evidence for 7" in str(i.proto) for i in images) >= 3
    assert any("colour scale" in str(i.proto) for i in images)
    marks = [m.value for m in at.markdown if "-badge[" in m.value]  # each model's top-1 against the sample's class
    assert len(marks) == 5 and all(m in (":green-badge[right]", ":red-badge[wrong: it is 7]") for m in marks)
    next(s for s in at.selectbox if s.label == "Sample test image").set_value(None).run()  # no image, no toggle
    assert not [t for t in at.toggle if t.label == "Show class-activation maps"]
    next(s for s in at.selectbox if s.label == "Sample test image").set_value("7_0.png").run()
    assert next(t for t in at.toggle if t.label == "Show class-activation maps").value  # still on, maps shown
    assert len(at.get("image")) == 12
