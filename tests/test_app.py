"""Streamlit AppTest: every page renders, sliders change the table, uploads predict, bad uploads are errors."""
import io
import json
import time

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT

PAGES = ["pages/architectures.py", "pages/train.py", "pages/sweep.py", "pages/predict.py", "pages/runs.py",
         "pages/docs.py"]


def app(page=None):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_cites_the_paper_and_starts_a_new_user_in_three_steps(app_env):
    import re

    at = app()
    text = " ".join(m.value for m in at.markdown)
    assert "multi-scale" in text and "2018" in text
    assert [m.value.split("**")[1] for m in at.markdown if re.match(r"\*\*\d\. ", m.value)] == [
        "1. Look at the units", "2. Train and compare", "3. Predict"]
    results = (ROOT / "docs" / "RESULTS.md").read_text()
    numbers = re.findall(r"\d+\.\d\d", text)  # the headline's numbers are RESULTS.md's
    assert len(numbers) >= 5 and all(n in results for n in numbers), numbers


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_env, page):
    at = app(page)
    assert at.title[0].value


def test_architecture_table_follows_the_sliders(app_env):
    at = app("pages/architectures.py")
    before = at.dataframe[0].value.set_index("model")
    at.slider[1].set_value(64).run()  # width
    after = at.dataframe[0].value.set_index("model")
    assert not at.exception
    assert (after["params"] > before["params"]).all()
    at.slider[0].set_value(4).run()  # units
    assert not at.exception
    assert (at.dataframe[0].value.set_index("model")["unit_params"] == after["unit_params"]).all()
    tables_show_no_none(at)  # no finished run at this width: the accuracy cells are empty


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_upload_predicts_with_all_five_models(app_env):
    at = app("pages/predict.py")
    digit = Image.open(ROOT / "samples" / "mnist" / "7_0.png")
    at.file_uploader[0].set_value(("seven.png", png_bytes(digit), "image/png")).run()
    assert not at.exception and not at.error
    models = [m.value.strip("*") for m in at.markdown if m.value.startswith("**")]
    assert set(models) == {"alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"}
    tops = [p for p in at.get("progress")]
    assert len(tops) == 15  # top-3 for each of five models


def test_predict_page_hints_that_a_photo_is_unlike_the_training_digits(app_env):
    at = app("pages/predict.py")
    digit = Image.open(ROOT / "samples" / "mnist" / "7_0.png")
    at.file_uploader[0].set_value(("seven.png", png_bytes(digit), "image/png")).run()
    assert not at.exception and not at.warning
    photo = Image.open(ROOT / "samples" / "cifar10" / "cat_3000.png")
    at.file_uploader[0].set_value(("cat.png", png_bytes(photo), "image/png")).run()
    assert not at.exception and len(at.warning) == 1
    assert at.warning[0].value.startswith("This image looks unlike the mnist training images")
    assert len(at.get("progress")) == 15  # the predictions still show, below the hint


@pytest.mark.parametrize("content", [b"this is not an image", png_bytes(Image.new("L", (28, 28)))[:40]])
def test_corrupt_upload_is_an_error_message(app_env, content):
    at = app("pages/predict.py")
    at.file_uploader[0].set_value(("broken.png", content, "image/png")).run()
    assert not at.exception
    assert at.error and "Can't use this file" in at.error[0].value


def widget(at, kind: str, label: str):
    return next(w for w in at.get(kind) if w.label == label)


def tables_show_no_none(at):
    """Every table of the page: an empty cell reads "—" (ui.MISSING, not Streamlit's "None"), and no cell holds
    the text None or nan."""
    assert at.dataframe
    for d in at.dataframe:
        assert d.proto.placeholder == "—"
        for col, values in d.value.items():
            text = values.dropna().astype(str)
            assert not text.str.fullmatch(r"None|nan|NaN|<NA>|NaT").any(), (col, text.tolist())


@pytest.mark.slow
def test_train_page_runs_seeds_in_background_and_shows_grouped_results(app_env):
    at = app("pages/train.py")
    widget(at, "number_input", "Iterations (0 = preset's)").set_value(20)
    at.multiselect[0].set_value(["mobilenet", "ms_add"])
    widget(at, "selectbox", "Precision").set_value("bf16")
    widget(at, "number_input", "Seeds").set_value(2).run()
    start = at.button[0]
    assert start.label == "Start 4 runs (2 models × 2 seeds)"  # the count follows the inputs before Start
    assert any(c.value.startswith("Estimated training time") for c in at.caption)  # measured, or "unknown"
    start.click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    from ui import service

    svc = service()
    at.button[0].click().run()  # a double-click: the same batch, not a second one
    assert svc.manager.wait(timeout=240)
    batch = at.session_state["batch"]
    done = svc.runs(batch=batch)
    assert len(done) == 4 and set(done["status"]) == {"done"} and sorted(done["seed"]) == [0, 0, 1, 1]
    assert {json.loads(svc.store.get(r)["env"])["precision"] for r in done["id"]} == {"bf16"}
    at.run()
    assert not at.exception
    picker = next(s for s in at.selectbox if s.label == "Batch")
    assert "(quick, bf16)" in picker.format_func(picker.value)
    grouped = at.dataframe[0].value
    assert len(grouped) == 2 and set(grouped["n"]) == {2}
    assert set(grouped["Δ vs reference"]) - {"reference"} and grouped["accuracy"].str.contains("±").all()
    ref = widget(at, "selectbox", "Reference")
    assert ref.value.startswith("mobilenet")
    verdicts = [m.value for m in at.markdown if m.value.startswith("- ")]
    assert len(verdicts) == 1 and ("not distinguishable" in verdicts[0] or "is better than" in verdicts[0])
    ref.set_value(next(o for o in ref.options if o.startswith("ms_add"))).run()
    assert not at.exception
    by_config = at.dataframe[0].value.set_index("configuration")["Δ vs reference"]
    assert by_config[ref.value] == "reference" and by_config.drop(ref.value).str.contains(r"\[").all()
    tables_show_no_none(at)
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimated training time"))
    assert estimate.startswith("Estimated training time: about") and "4 runs at the median img/s" in estimate


def test_sweep_page_runs_a_grid_and_draws_the_frontier(app_env):
    at = app("pages/sweep.py")
    at.multiselect[0].set_value(["mobilenet", "alexnet"])
    at.multiselect[2].set_value([8])  # widths
    widget(at, "number_input", "Iterations (0 = preset's)").set_value(10)
    widget(at, "number_input", "Seeds").set_value(1).run()
    assert at.button[0].label == "Start sweep (2 trials)"  # the count follows the inputs before Start
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from ui import service

    svc = service()
    sid = at.query_params["sweep"]  # the sweep's id is in the URL
    at.button[0].click().run()  # a double-click: the same sweep, not a second one
    assert at.query_params["sweep"] == sid and [s["id"] for s in svc.sweep_list()] == [sid]
    deadline = time.time() + 180
    while svc.sweep_status(sid)["running"] and time.time() < deadline:
        time.sleep(0.5)
    status = svc.sweep_status(sid)
    assert status["finished"] == 2 and status["state"] == "done" and not status["error"]
    at = app()  # a new tab (or a reload) on the sweep's URL lists it with its trials
    at.query_params["sweep"] = sid
    at.switch_page("pages/sweep.py").run()
    assert not at.exception
    assert any(t.value.startswith(f"{sid} (local, done)") and "2 of 2 trials ended" in t.value for t in at.text)
    assert len(at.dataframe[0].value) == 2
    assert any("Pareto frontier" in str(c.proto.spec) for c in at.get("plotly_chart"))
    tables_show_no_none(at)
    at.radio[-1].set_value("latency_ms").run()  # the Cost radio: latency measured on this machine
    assert not at.exception
    import base64

    import numpy as np

    spec, xs = json.loads(at.get("plotly_chart")[-1].proto.spec), []
    for t in spec["data"]:
        if t.get("mode") == "markers":
            x = t["x"]
            if isinstance(x, dict):  # plotly's typed-array encoding: {"dtype": ..., "bdata": base64}
                x = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])
            xs += [float(v) for v in x]
    assert xs and all(0 < x < 1000 for x in xs), xs
    assert spec["layout"]["xaxis"]["title"]["text"] == "batch-1 latency (ms)"


def test_runs_page_shows_a_confusion_matrix_and_misclassified_images(app_env):
    from ui import service

    svc = service()
    if not len(svc.runs(status="done")):
        svc.start(["mobilenet"], "mnist", "quick", str(app_env / "data"), iters=20, width=8)
        assert svc.manager.wait(timeout=180)
    at = app("pages/runs.py")
    assert not at.exception
    charts = [str(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("Heatmap" in c or "heatmap" in c for c in charts)
    assert any("Accuracy per class" in c for c in charts)


def test_runs_page_compares_two_configurations_and_shows_reliability(app_env):
    from ui import service

    svc = service()
    batch, ids = svc.start(["mobilenet", "alexnet"], "mnist", "quick", str(app_env / "data"), iters=20, width=8,
                           seeds=2, seed=100)
    assert svc.manager.wait(timeout=240)
    at = app("pages/runs.py")
    at.multiselect[1].set_value(["alexnet", "mobilenet"]).run()  # the Model filter
    assert not at.exception
    a, b = widget(at, "selectbox", "A"), widget(at, "selectbox", "B")
    mob = next(o for o in a.options if o.startswith("mobilenet · mnist · quick 20 it · w8 ·"))
    alex = next(o for o in b.options if o.startswith("alexnet · mnist · quick 20 it · w8 ·"))
    a.set_value(mob).run()
    widget(at, "selectbox", "B").set_value(alex).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    verdict = next(m.value for m in at.markdown if "distinguishable" in m.value or "is better than" in m.value)
    assert "mobilenet" in verdict and "alexnet" in verdict
    assert any("McNemar" in c.value for c in at.caption)
    charts = [str(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("Reliability" in c and "ECE" in c for c in charts)


def test_runs_page_cancels_any_active_run_and_names_runs_one_way(app_env):
    from ui import service

    svc = service()
    _, (rid,) = svc.start(["mobilenet"], "mnist", "quick", str(app_env / "data"), iters=100_000, width=8, seed=7)
    at = app("pages/runs.py")
    line = next(t.value for t in at.text if t.value.endswith(" iterations") and rid[-6:] in t.value)
    assert line.startswith("mobilenet · mnist · quick 100,000 it · w8 · ") and " · seed 7 · " in line
    next(b for b in at.button if b.key == f"cancel-{rid}").click().run()
    assert not at.exception
    assert svc.manager.wait(timeout=60) and svc.store.get(rid)["status"] == "cancelled"
    curves = widget(at, "multiselect", "Compare curves of")
    assert curves.format_func(rid).startswith("mobilenet · mnist · quick 100,000 it · w8 · ")
    at.run()
    assert svc.runs(ids=[rid])["test_acc"].isna().all()  # a cancelled run has no accuracy: an empty cell, not "None"
    tables_show_no_none(at)
