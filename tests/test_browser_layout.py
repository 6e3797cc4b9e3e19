"""In a real browser: every page at 900 and 1400 px without sideways scrolling or a request off this machine, and a
sweep that keeps its place in the URL across a reload."""
import re
import shutil
from urllib.parse import urlparse

import pytest

from conftest import ROOT, app_server, digits_npz

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                 "(apt-get install chromium chromium-driver); .ci/run installs it")]
SHOTS = ROOT / "tests" / "screenshots"
PAGES = {"": "mscompare", "architectures": "Architectures", "train": "Train & compare", "sweep": "Sweep",
         "predict": "Predict", "runs": "Runs", "docs": "Docs"}


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    data = tmp_path_factory.mktemp("layout-data")
    digits_npz(data, name="mnist", n_train=200, n_test=50)
    SHOTS.mkdir(exist_ok=True)
    with app_server({"MSCOMPARE_RUNS_DIR": str(tmp_path_factory.mktemp("layout-runs")),
                     "MSCOMPARE_DATA_ROOT": str(data)}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        off_host = []
        page.on("request", lambda r: urlparse(r.url).hostname not in ("127.0.0.1", None)
                and r.url.startswith("http") and off_host.append(r.url))
        yield url, page, off_host
        browser.close()


def settle(page):
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


@pytest.mark.parametrize("width", [1400, 900])
def test_every_page_fits_the_window_and_stays_on_this_machine(browser_page, width):
    url, page, off_host = browser_page
    page.set_viewport_size({"width": width, "height": 1000})
    for path, heading in PAGES.items():
        page.goto(f"{url}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        settle(page)
        assert page.locator("[data-testid='stException']").count() == 0, path
        overflow = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stMain\"] *')]"
                                 ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1"
                                 " && !e.closest('[data-testid=\"stDataFrame\"], .js-plotly-plot, canvas'))"
                                 ".map(e => e.getAttribute('data-testid') || e.tagName).slice(0, 5)")
        if path == "docs":  # RESULTS.md's widest Markdown tables are wider than 900 px; the text fits
            overflow = [t for t in overflow if t not in ("TABLE", "THEAD", "TBODY", "TR", "TH", "TD")]
        assert not overflow, (path, width, overflow)
        page.screenshot(path=SHOTS / f"layout-{path or 'home'}-{width}.png", full_page=True)
    assert not off_host, off_host  # favicon, fonts and icons all come from the app itself


def test_a_sweep_keeps_its_place_in_the_url_and_is_listed_after_a_reload(browser_page):
    url, page, _ = browser_page
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}/sweep")
    page.get_by_role("button", name=re.compile(r"^Start sweep")).wait_for()
    settle(page)
    for box, keep in ((0, "mobilenet"), (2, "8")):  # models, widths
        chosen = page.get_by_test_id("stMultiSelect").nth(box)
        if box == 2:
            chosen.click()
            page.get_by_role("option", name="8", exact=True).click()
            page.keyboard.press("Escape")
            settle(page)
        for name in chosen.locator("[data-tag] [title]").all_inner_texts():
            if name != keep:
                chosen.get_by_role("button", name=f"Remove {name}").click()
                settle(page)
    for label, value in (("Seeds", 1), ("Iterations (0 = preset's)", 10)):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(str(value))
        box.press("Tab")
        settle(page)
    page.get_by_role("button", name="Start sweep (1 trials)").click()
    page.wait_for_url(re.compile(r"[?&]sweep=sweep-"))
    sid = re.search(r"[?&]sweep=([^&#]+)", page.url)[1]
    page.get_by_text(re.compile(rf"^{sid} \(local, done\)")).wait_for(timeout=300_000)
    page.reload()
    page.get_by_text(re.compile(rf"^{sid} \(local, done\).*1 of 1 trials ended")).wait_for()
    page.get_by_test_id("stDataFrame").first.wait_for()  # its trials, because the URL names it
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=SHOTS / "layout-sweep-listed-1400.png", full_page=True)
