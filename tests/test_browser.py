"""End-to-end in a real browser: `streamlit run app.py` headless, driven by Playwright in Debian's chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, digits_npz

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(apt-get install chromium chromium-driver); .ci/run installs it")
SHOTS = ROOT / "tests" / "screenshots"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("e2e-data")
    digits_npz(data, name="mnist", n_train=300, n_test=100)  # mnist-shaped stand-in, so training is quick
    env = {**os.environ, "MSCOMPARE_RUNS_DIR": str(tmp_path_factory.mktemp("e2e-runs")),
           "MSCOMPARE_DATA_ROOT": str(data)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(90_000)
        yield pg
        browser.close()


def no_exception(pg):
    assert pg.locator("[data-testid='stException']").count() == 0


def test_home_and_every_page(server, page):
    # a deep link is the first request of this fresh server: it must still get the app's navigation
    page.goto(f"{server}/runs")
    page.get_by_role("heading", name="Runs").wait_for()
    assert "Home" in page.locator("[data-testid='stSidebarNav']").inner_text()
    page.goto(server)
    page.get_by_role("heading", name="mscompare").wait_for()
    page.screenshot(path=SHOTS / "home.png")
    for path, heading, ready in (("architectures", "Architectures", "All five models on"),
                                 ("train", "Train & compare", "No runs yet"), ("runs", "Runs", "No runs stored yet")):
        page.goto(f"{server}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        page.get_by_text(ready).first.wait_for()
        if path == "architectures":
            page.locator("[data-testid='stPlotlyChart']").first.wait_for()
        page.wait_for_timeout(500)
        no_exception(page)
        page.screenshot(path=SHOTS / f"{path}.png", full_page=True)


def test_training_shows_live_curves_and_results(server, page):
    page.goto(f"{server}/train")
    page.get_by_role("button", name="Start training").wait_for()
    iters = page.get_by_label("Iterations (0 = preset's)")
    iters.fill("10")
    iters.press("Tab")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Queued 5 runs").wait_for()
    page.get_by_text("alexnet: running").wait_for()  # live status while training
    page.locator("[data-testid='stPlotlyChart']").first.wait_for()
    page.get_by_text("0 of 5 runs active").wait_for(timeout=600_000)
    assert page.get_by_text("5 done").count() == 1
    page.get_by_role("button", name="Download results CSV").wait_for()
    page.wait_for_timeout(2500)  # the next fragment refresh draws the finished curves
    no_exception(page)
    page.screenshot(path=SHOTS / "train-done.png")


def test_upload_shows_predictions(server, page):
    page.goto(f"{server}/predict")
    page.get_by_role("heading", name="Predict").wait_for()
    page.locator("input[type='file']").set_input_files(str(ROOT / "samples" / "mnist" / "3_18.png"))
    page.get_by_text("what the model saw").nth(4).wait_for()
    for model in ("alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"):
        assert page.get_by_text(model, exact=True).count() >= 1
    assert page.get_by_text("3:", exact=False).count() >= 1
    no_exception(page)
    page.screenshot(path=SHOTS / "predict.png", full_page=True)
