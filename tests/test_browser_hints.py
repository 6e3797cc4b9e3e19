"""In a real browser at 1400 and 900 px: Predict's out-of-distribution hint and the pad's Clear button, the Train and
Sweep forms' estimated training time, and tables whose empty cells never read None or nan."""
import re

import pytest
from playwright.sync_api import expect

from conftest import BROWSER, ROOT, SHOTS, app_server, digits_npz, no_exception, settle
from mscompare.config import config_for, preset
from mscompare.runs import RunStore

pytestmark = [*BROWSER, pytest.mark.xdist_group("browser_hints")]  # one worker starts its module-scoped app
SAMPLES = ROOT / "samples"
WIDTHS = [1400, 900]


def stored_runs(runs_dir):
    """A batch as the Train page leaves it: two finished mobilenet runs (2,000 and 1,800 img/s), a cancelled
    alexnet run and a failed googlenet one, with no accuracy, seconds or img/s."""
    store = RunStore(runs_dir)
    for model, seed, status, ips, acc in (("mobilenet", 0, "done", 2000, 0.95), ("mobilenet", 1, "done", 1800, 0.96),
                                          ("alexnet", 0, "cancelled", None, None),
                                          ("googlenet", 0, "failed", None, None)):
        cfg = preset("quick", "mnist", seed=seed, device="cpu")
        rid = store.create(config_for(model, "mnist"), cfg, tag="app", batch="20261201-000000-ab12",
                           params=70_186, macs=614_048)
        store.update(rid, status=status, images_per_s=ips, test_acc=acc,
                     seconds=cfg.iters * cfg.batch_size / ips if ips else None,
                     message="stopped by the user" if status == "cancelled" else None,
                     env={"precision": "fp32", "device": "cpu"})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on a store that holds stored_runs' batch; no test writes to it."""
    data, runs = tmp_path_factory.mktemp("hints-data"), tmp_path_factory.mktemp("hints-runs")
    digits_npz(data, name="mnist", n_train=100, n_test=40)
    stored_runs(runs)
    with app_server(runs, data) as url:
        yield url


def open_page(url, page, path, width):
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", level=1).first.wait_for()
    settle(page)


HINT = "This image looks unlike the mnist training images"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_photo_gets_the_hint_and_a_real_digit_does_not(app, page, width):
    url = app
    open_page(url, page, "predict", width)
    upload = page.locator("input[type='file']")
    upload.set_input_files(str(SAMPLES / "cifar10" / "cat_3000.png"))
    page.get_by_text(HINT).wait_for()
    page.get_by_text("what the model saw").nth(4).wait_for()  # the predictions still show, below it
    settle(page)
    page.screenshot(path=SHOTS / f"predict-ood-hint-{width}.png", full_page=True)
    upload.set_input_files(str(SAMPLES / "mnist" / "7_0.png"))
    page.get_by_text("7_0.png").wait_for()  # the uploader's chip: drawn before the script reruns
    page.get_by_text(HINT).wait_for(state="hidden")  # the rerun for the digit drops the hint
    page.get_by_text("what the model saw").nth(4).wait_for()
    settle(page)
    assert page.get_by_text(HINT).count() == 0
    no_exception(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_drawing_pad_clears_with_its_one_clear_button(app, page, width):
    url = app
    open_page(url, page, "predict", width)
    page.get_by_text("Draw", exact=True).click()
    pad = page.locator("canvas.upper-canvas").first  # fabric.js's drawing layer, in the component's shadow root
    pad.wait_for()
    clear = page.get_by_role("button", name=re.compile("Clear"))
    assert clear.count() == 1 and clear.is_disabled()  # nothing to clear yet
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    for y in range(40, 241, 20):  # a "1"
        page.mouse.move(box["x"] + 140, box["y"] + y)
    page.mouse.up()
    page.get_by_text("what the model saw").nth(4).wait_for()
    settle(page)
    assert page.get_by_text(HINT).count() == 0  # a drawn digit is like the training digits
    assert page.get_by_text("mode RGB").count() == 0  # the drawing is shown once: on the pad
    assert clear.count() == 1 and clear.is_enabled()
    page.screenshot(path=SHOTS / f"predict-pad-drawn-{width}.png", full_page=True)
    clear.click()
    page.get_by_text("Draw a digit on the pad").wait_for()
    page.get_by_text("what the model saw").first.wait_for(state="detached")  # gone when that rerun ends
    settle(page)
    expect(clear).to_be_disabled()
    no_exception(page)


def estimate(page) -> str:
    line = page.get_by_text(re.compile(r"Estimated training time: ")).first
    line.wait_for()
    return line.inner_text()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_forms_say_the_estimated_time_and_follow_their_inputs(app, page, width):
    url = app
    open_page(url, page, "train", width)
    text = estimate(page)
    assert re.search(r"about \d+ (s|min) for mobilenet \(3 runs at the median img/s of 2 finished runs", text), text
    assert "unknown for alexnet, googlenet, ms_concat and ms_add" in text
    box = page.get_by_role("spinbutton", name="Iterations (0 = preset's)", exact=True)
    box.fill("3000")  # 10x the quick preset's 300: 3 x 3000 x 128 images at 1,900 img/s = 10 min
    box.press("Tab")
    page.get_by_text(re.compile(r"Estimated training time: about 10 min for mobilenet")).wait_for()
    settle(page)
    page.screenshot(path=SHOTS / f"train-estimate-{width}.png", full_page=True)
    open_page(url, page, "sweep", width)
    text = estimate(page)
    assert "unknown for" in text and re.search(r"trials\. ", page.get_by_text(re.compile("trials. ")).first
                                               .inner_text())
    page.screenshot(path=SHOTS / f"sweep-estimate-{width}.png", full_page=True)
    no_exception(page)


CELLS = ("() => [...document.querySelectorAll(\"[data-testid='stDataFrame'] td, [data-testid='stDataFrame'] "
         "[role='gridcell']\")].map(c => c.innerText.trim())")


@pytest.mark.parametrize("width", WIDTHS)
def test_no_table_on_any_page_reads_none_or_nan(app, page, width):
    url = app
    for path in ("runs", "train", "architectures"):
        open_page(url, page, path, width)
        if path == "train":
            page.get_by_text(re.compile(r"^Single runs \(4\)")).click()
        grids = page.get_by_test_id("stDataFrame")
        grids.first.wait_for()
        page.wait_for_function(f"({CELLS})().length > 0")
        cells = page.evaluate(CELLS)
        assert not [c for c in cells if re.fullmatch(r"None|nan|NaN|<NA>|NaT", c)], (path, cells)
        if path == "runs":  # the cancelled and the failed run: no accuracy, an empty cell
            assert "cancelled" in cells and "failed" in cells
        text = page.get_by_test_id("stMain").inner_text()  # nor any other line (a failed run without a message)
        assert not re.findall(r".{0,40}\b(?:None|nan|NaN)\b.{0,20}", text), path
        settle(page)
        no_exception(page)
        page.screenshot(path=SHOTS / f"tables-{path}-{width}.png", full_page=True)
