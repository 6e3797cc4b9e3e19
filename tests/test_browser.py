"""End-to-end in a real browser: `streamlit run app.py` headless, driven by Playwright in Debian's chromium."""
import csv
import re
import time

import pytest

from conftest import BROWSER, ROOT, SHOTS, app_server, digits_npz, mscompare_cli, no_exception, settle
from mscompare.models import list_units

pytestmark = BROWSER


def serve(tmp_path, seed_run: bool = False):
    """`streamlit run app.py` on this test's own run store and an mnist-shaped stand-in (quick to train); with
    `seed_run`, one finished mobilenet run already in the store."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    digits_npz(data, name="mnist", n_train=300, n_test=100)
    if seed_run:
        done = mscompare_cli("train", "--model", "mobilenet", "--dataset", "mnist", "--data-root", data,
                             "--runs-dir", runs, "--iters", "20", "--eval-every", "10")
        assert done.returncode == 0, done.stderr
    return app_server(runs, data)


@pytest.fixture
def server(tmp_path):
    with serve(tmp_path) as url:
        yield url


@pytest.fixture
def server_with_a_run(tmp_path):
    with serve(tmp_path, seed_run=True) as url:
        yield url


def test_home_and_every_page(server, page):
    # a deep link is the first request of this fresh server: it must still get the app's navigation
    page.goto(f"{server}/runs")
    page.get_by_role("heading", name="Runs").wait_for()
    assert "Home" in page.locator("[data-testid='stSidebarNav']").inner_text()
    page.goto(server)
    page.get_by_role("heading", name="mscompare").wait_for()
    page.screenshot(path=SHOTS / "home.png")
    for path, heading, ready in (("architectures", "Architectures", "Every unit type on"),
                                 ("train", "Train & compare", "No runs yet"), ("sweep", "Sweep", "No finished runs yet"),
                                 ("runs", "Runs", "No runs stored yet")):
        page.goto(f"{server}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        page.get_by_text(ready).first.wait_for()
        if path == "architectures":
            page.locator("[data-testid='stPlotlyChart']").first.wait_for()
        page.wait_for_timeout(500)
        no_exception(page)
        page.screenshot(path=SHOTS / f"{path}.png", full_page=True)


def fill(page, label, value):
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Tab")
    settle(page)


def test_training_shows_live_curves_and_results(server, page):
    page.goto(f"{server}/train")
    page.get_by_role("button", name=START).wait_for()
    settle(page)
    fill(page, "Iterations (0 = preset's)", 10)
    fill(page, "Seeds", 1)
    n = len(list_units())  # every registered unit is selected by default
    page.get_by_role("button", name=f"Start {n} runs ({n} models × 1 seed)").click()
    page.get_by_text(f"Queued {n} runs").wait_for()
    page.get_by_text(re.compile(r"^\w+: running, \d+/10")).first.wait_for()  # live status while training
    page.get_by_text(f"0 of {n} runs active").wait_for(timeout=600_000)
    page.locator("[data-testid='stPlotlyChart']").first.wait_for()
    assert page.get_by_text(f"{n} done").count() == 1
    page.get_by_text("Results by configuration").first.wait_for()
    wait_until(page, lambda: chart_points(page) > 0, "the finished curves")  # drawn by the next fragment refresh
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


START = re.compile(r"^Start \d+ runs? \(")
RESULT_COLUMNS = ["run_id", "model", "dataset", "preset", "iters", "seed", "units", "width", "status", "params",
                  "macs", "test_acc_%", "seconds", "images_per_s", "created"]
RUN_LINE = re.compile(rf"^({'|'.join(map(re.escape, list_units()))}): ")


def start_batch(page, server, models, iters, seeds=1):
    """Train page: keep only `models`, set the iterations and seeds, start; returns the batch id from the URL."""
    page.goto(f"{server}/train")
    page.get_by_role("button", name=START).wait_for()
    settle(page)  # a deep link on a fresh server goes through app.py first and redraws the form
    chosen = page.get_by_test_id("stMultiSelect").first
    for m in list_units():
        remove = chosen.get_by_role("button", name=f"Remove {m}")
        if m not in models and remove.count():
            remove.click()
    assert chosen.locator("[data-tag] [title]").all_inner_texts() == models
    fill(page, "Iterations (0 = preset's)", iters)
    fill(page, "Seeds", seeds)
    n = len(models) * seeds
    plural = lambda k, word: f"{k} {word}{'s' if k != 1 else ''}"  # noqa: E731
    page.get_by_role("button", name=f"Start {plural(n, 'run')} ({plural(len(models), 'model')} × "
                                   f"{plural(seeds, 'seed')})").click()
    page.get_by_text(f"Queued {n} run{'s' if n != 1 else ''} as batch").wait_for()
    page.wait_for_url(re.compile(r"[?&]batch="))
    return re.search(r"[?&]batch=([^&#]+)", page.url)[1]


def run_lines(page):
    return [t for t in page.get_by_test_id("stText").all_inner_texts() if RUN_LINE.match(t)]


def wait_until(page, check, what, timeout_s=300):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if check():
            return
        page.wait_for_timeout(250)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def tall_shot(page, name):
    """The whole Train page, chart and results table included (the app scrolls inside the window)."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 2400})
    page.wait_for_timeout(800)
    page.screenshot(path=SHOTS / name)
    page.set_viewport_size(size)


def chart_points(page):
    return page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace .point").count()


def shows_only_batch(page, batch, lines):
    """The batch picker names `batch` and exactly these run lines are shown."""
    page.get_by_text("0 of 2 runs active").wait_for()
    assert page.get_by_role("combobox", name="Batch").input_value().startswith(batch)
    wait_until(page, lambda: len(run_lines(page)) == len(lines), "the batch's run lines")  # drawn after the summary
    got = sorted(run_lines(page))
    assert [re.sub(r", \d+/\d+.*", "", t) for t in got] == lines, got
    assert "batch=" + batch in page.url


def test_batch_live_cancel_reload_and_csv(server, page):
    batch = start_batch(page, server, ["alexnet", "mobilenet"], 150)
    page.get_by_text("alexnet: running").wait_for()
    page.get_by_text("mobilenet: running").wait_for()
    # live: the progress lines move while the runs train
    first = run_lines(page)
    wait_until(page, lambda: run_lines(page) != first and all(" 0/" not in t for t in run_lines(page)),
               "the progress lines to move")
    no_exception(page)

    # cancel alexnet a few iterations in: its line says so, the other run goes on
    row = page.get_by_test_id("stHorizontalBlock").filter(has_text=re.compile(r"^alexnet: running"))
    row.get_by_role("button", name="Cancel").click()
    page.get_by_text(re.compile(r"^alexnet: cancelled")).wait_for(timeout=60_000)
    assert page.get_by_text(re.compile(r"^mobilenet: (running|done)")).count() == 1
    # the chart gets traces (eval every 50 iterations), redrawn every 10 s while the batch trains and at its end
    wait_until(page, lambda: chart_points(page) >= 2, "eval points on the chart")
    assert page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace").count() >= 2  # accuracy + loss
    tall_shot(page, "train-live.png")
    page.get_by_text("0 of 2 runs active").wait_for(timeout=600_000)
    summary = page.get_by_text("0 of 2 runs active").inner_text()
    assert "1 done" in summary and "1 cancelled" in summary, summary
    wait_until(page, lambda: chart_points(page) >= 3  # mobilenet's evals at 50, 100 and 150 after the final redraw
               and page.get_by_text("No run of this batch has finished yet.").count() == 0, "the final results")
    settle(page)  # the redraw at the batch's end is done: no button below is replaced while it is clicked
    no_exception(page)
    tall_shot(page, "train-cancelled.png")

    # the CSV: one row per run of this batch, the paper-table columns
    page.get_by_text(re.compile(r"^Single runs \(2\)")).click()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download results CSV").click()
    assert dl.value.suggested_filename == f"results-{batch}.csv"
    with open(dl.value.path(), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == RESULT_COLUMNS
    assert sorted((r["model"], r["status"]) for r in rows) == [("alexnet", "cancelled"), ("mobilenet", "done")]
    done = next(r for r in rows if r["status"] == "done")
    assert done["iters"] == "150" and float(done["images_per_s"]) > 0 and 0 <= float(done["test_acc_%"]) <= 100

    # a newer batch exists; the URL of the first still shows the first, and only it, also after a reload
    newer = start_batch(page, server, ["alexnet"], 10)
    assert newer != batch
    page.get_by_text("0 of 1 run active").wait_for(timeout=300_000)
    page.goto(f"{server}/train?batch={batch}")
    shows_only_batch(page, batch, ["alexnet: cancelled", "mobilenet: done"])
    page.reload()
    shows_only_batch(page, batch, ["alexnet: cancelled", "mobilenet: done"])
    no_exception(page)
    tall_shot(page, "train-reloaded.png")


def test_runs_page_confusion_matrix_and_predict_cam(server_with_a_run, page):
    """A finished run's confusion matrix, and the class-activation maps."""
    server = server_with_a_run
    page.goto(f"{server}/runs")
    page.get_by_role("heading", name="Where a run is right or wrong").wait_for()
    page.get_by_text("Accuracy per class").first.wait_for()
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for()
    page.screenshot(path=str(SHOTS / "runs-confusion.png"), full_page=True)
    no_exception(page)
    page.goto(f"{server}/predict")
    page.get_by_role("heading", name="Predict").wait_for()
    page.get_by_text("Sample", exact=True).click()
    page.get_by_label("Sample test image").click()
    page.get_by_role("option").first.click()
    page.get_by_text("what the model saw").nth(4).wait_for()
    page.get_by_text("Show class-activation maps").click()
    page.get_by_text("evidence for").nth(4).wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete)")  # every map drawn in the screenshot
    page.screenshot(path=str(SHOTS / "predict-cam.png"), full_page=True)
    no_exception(page)


def test_seeds_grouped_verdict_and_report_at_two_widths(server, page, tmp_path):
    """Two models x 2 seeds: one row per configuration with spread, a paired verdict, a report that opens offline."""
    start_batch(page, server, ["mobilenet", "ms_add"], 30, seeds=2)
    page.get_by_text("0 of 4 runs active").wait_for(timeout=600_000)
    page.get_by_text("Results by configuration").first.wait_for()
    grid = page.get_by_test_id("stDataFrame").first
    grid.wait_for()
    wait_until(page, lambda: page.get_by_text(re.compile(r"(not distinguishable|is better than)")).count() > 0,
               "the paired verdict")
    for width in (1400, 900):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(800)
        no_exception(page)
        tall_shot(page, f"train-seeds-{width}.png")
    page.set_viewport_size({"width": 1400, "height": 1000})
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download report (HTML)").click()
    report = tmp_path / "report.html"
    dl.value.save_as(report)
    html = report.read_text()
    assert "<script src" not in html and "Paired verdicts against" in html
    page.goto(report.as_uri())  # a file, offline: plotly is inlined
    page.get_by_role("heading", name="Configurations (accuracy over seeds)").wait_for()
    page.locator(".js-plotly-plot .main-svg").first.wait_for()
    assert page.locator("table.t tr").count() >= 3
    page.screenshot(path=SHOTS / "report.png", full_page=True)
