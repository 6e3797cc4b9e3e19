"""In a real browser: every page at 900 and 1400 px without sideways scrolling or a request off this machine, and a
sweep that keeps its place in the URL across a reload."""
import re
from urllib.parse import urlparse

import pytest

from conftest import BROWSER, SHOTS, app_server, digits_npz, settle

pytestmark = [*BROWSER, pytest.mark.xdist_group("browser_layout")]  # one worker starts its module-scoped app
PAGES = {"": "mscompare", "architectures": "Architectures", "train": "Train & compare", "sweep": "Sweep",
         "predict": "Predict", "runs": "Runs", "docs": "Docs"}


def serve(data_dir, runs_dir):
    digits_npz(data_dir, name="mnist", n_train=200, n_test=50)
    return app_server(runs_dir, data_dir)


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory):
    """The app on an empty run store that no test writes to: the pages as a new user sees them."""
    with serve(tmp_path_factory.mktemp("layout-data"), tmp_path_factory.mktemp("layout-runs")) as url:
        yield url


@pytest.fixture
def own_app(tmp_path):
    """The app on this test's own run store."""
    with serve(tmp_path / "data", tmp_path / "runs") as url:
        yield url


@pytest.mark.parametrize("width", [1400, 900])
def test_every_page_fits_the_window_and_stays_on_this_machine(empty_app, page, width):
    url, off_host = empty_app, []
    page.on("request", lambda r: urlparse(r.url).hostname not in ("127.0.0.1", None)
            and r.url.startswith("http") and off_host.append(r.url))
    page.set_viewport_size({"width": width, "height": 1000})
    for path, heading in PAGES.items():
        page.goto(f"{url}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        settle(page)
        assert page.locator("[data-testid='stException']").count() == 0, path
        overflow = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stMain\"] *')]"
                                 ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1"
                                 " && !e.closest('[data-testid=\"stDataFrame\"], .js-plotly-plot, canvas')"
                                 " && !e.parentElement.closest('pre'))"  # a code block scrolls inside its box
                                 ".map(e => e.getAttribute('data-testid') || e.tagName).slice(0, 5)")
        if path == "docs":  # RESULTS.md's widest Markdown tables are wider than 900 px; the text fits
            overflow = [t for t in overflow if t not in ("TABLE", "THEAD", "TBODY", "TR", "TH", "TD")]
        assert not overflow, (path, width, overflow)
        page.screenshot(path=SHOTS / f"layout-{path or 'home'}-{width}.png", full_page=True)
    assert not off_host, off_host  # favicon, fonts and icons all come from the app itself


def test_a_sweep_keeps_its_place_in_the_url_and_is_listed_after_a_reload(own_app, page):
    url = own_app
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
