"""Shared fixtures: small real-format datasets written to tmp dirs, so no test needs ../shared or a network."""
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tests" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A browser test module's pytestmark.
BROWSER = [pytest.mark.browser, pytest.mark.slow,
           pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                              "(apt-get install chromium chromium-driver); .ci/run installs it")]
# The suite runs one pytest worker per core (pytest.ini): OpenMP threads that wait passively cost little when the
# workers' training threads, servers and browsers outnumber the cores. Set before torch loads, and inherited by
# every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def digits_npz(root: Path, name: str = "tinydigits", n_train: int = 600, n_test: int = 200, size: int = 28,
               channels: int = 1, seed: int = 0) -> Path:
    """A learnable npz dataset: each class is a bright square at its own position, plus noise."""
    rng = np.random.default_rng(seed)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 40, (n, size, size, channels)).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, 4 + r * 12:12 + r * 12, 4 + col * 12:12 + col * 12, :] = 230
        np.savez_compressed(d / f"{split}.npz", x=x, y=y.astype(np.int64))
    (d / "classes.txt").write_text("tl\ntr\nbl\nbr\n")
    return d


def encode(img, fmt: str, **kw) -> bytes:
    """A PIL image as the bytes of a file in `fmt` (PNG, JPEG, ...)."""
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def digit(size: int = 28, fg: int = 255, bg: int = 0, mode: str = "L", bar: float = 1 / 7):
    """A '1'-like vertical bar, `bar` x size wide, fg on bg, as a PIL image in `mode`."""
    from PIL import Image

    a = np.full((size, size), bg, np.uint8)
    half = int(size * bar) // 2
    a[size // 5: -size // 5, size // 2 - half: size // 2 + half] = fg
    return Image.fromarray(a, "L").convert(mode)


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test's default run store and data root (settings.home()) and its training marks are its own, never
    the user's or another test's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MSCOMPARE_TRAINING_MARKS", str(tmp_path / "training-marks"))


@pytest.fixture
def mnist_like(tmp_path):
    """An MNIST-shaped dataset named mnist (300 train, 100 test images) under tmp_path/data: quick to learn."""
    digits_npz(tmp_path / "data", name="mnist", n_train=300, n_test=100)
    return tmp_path / "data"


@pytest.fixture
def tiny_npz(tmp_path):
    digits_npz(tmp_path)
    return tmp_path


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """The app's run store and data root in this test's own folders (an MNIST-shaped `mnist` of 300 + 100
    images), and its own Service: ui.service is cached per process, so it is cleared before the test, and the
    test's Service is closed (its runs stopped, its worker slots ended) after it."""
    import ui

    base = tmp_path / "app"
    digits_npz(base / "data", name="mnist", n_train=300, n_test=100)
    monkeypatch.setenv("MSCOMPARE_RUNS_DIR", str(base / "runs"))
    monkeypatch.setenv("MSCOMPARE_DATA_ROOT", str(base / "data"))
    ui.service.clear()
    yield base
    ui.service().manager.close(timeout=0)  # the test's Service (made now if it made none): stop what it left
    ui.service.clear()


@dataclasses.dataclass
class Ran:
    """What a CLI call gave: as subprocess.CompletedProcess names it."""
    returncode: int
    stdout: str
    stderr: str


def mscompare_cli(*args, cwd: str | Path | None = None) -> Ran:
    """`mscompare ARGS` run by the CLI's main() in this process: its exit code, stdout and stderr, without a new
    process's 2-3 s of imports. What main() sets process-wide (environment, torch threads, the thread tuner,
    signal handlers, the working folder) is put back. The entry point itself, signals and kills are tested with
    `python -m mscompare` processes."""
    import io
    import signal
    from contextlib import redirect_stderr, redirect_stdout

    import torch

    from mscompare import threads
    from mscompare.cli import main

    env, n, tuner, here = dict(os.environ), torch.get_num_threads(), threads._tuner, os.getcwd()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    out, err = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(n)
        threads._tuner = tuner
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return Ran(code, out.getvalue(), err.getvalue())


def wait_for(check, what: str = "the condition", timeout: float = 120) -> None:
    """Poll `check` (a store row, a snapshot, a process) until it holds; fail naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(runs_dir: Path, data_root: Path, timeout: float = 90):
    """`streamlit run app.py` headless on a free local port, on the run store `runs_dir` and the datasets under
    `data_root`; yields its URL once the health endpoint answers, and stops the server after the block."""
    env = {"MSCOMPARE_RUNS_DIR": str(runs_dir), "MSCOMPARE_DATA_ROOT": str(data_root)}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian chromium driven by Playwright, one per pytest worker; each test gets its own `page`."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request):
    """A page in a fresh browser context (no cookies or storage from another test), 1400 x 1000; if the test
    fails, a screenshot of the page as it was: tests/screenshots/FAILED-<test>.png."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    failed = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed:
        pg.screenshot(path=SHOTS / f"FAILED-{request.node.name}.png")
    context.close()


def settle(page) -> None:
    """Wait until the page's script has finished its current run: Streamlit marks its app element with the run's
    state (as Streamlit's own end-to-end tests wait for it), and shows the status widget while a run goes on."""
    page.wait_for_timeout(300)  # an interaction's rerun request reaches the page
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for()
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
