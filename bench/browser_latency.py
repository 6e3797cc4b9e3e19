"""Owns the browser-side timing: a slider move on the Architectures page in headless chromium, key press to fully
redrawn page, beside the server's time for the same rerun.

The app runs as `streamlit run app.py` on a free local port with its own empty run store. Each move presses the
width slider's arrow key (one step of 8) and measures, in the page's own clock (performance.now()), from the key
press to the first animation frame where Streamlit's running indicator is gone, no element of the old run is left
(data-stale) and the heading shows the new width. The server's time is the same rerun seen on the websocket (Chrome
DevTools protocol timestamps): from the browser's rerun request to the server's script-finished message. Moves go
32 -> 64 and back, --rounds times, after one untimed warm-up walk; --think-s between moves lets the page's
background prefetch of neighbouring widths work, as a user's pause would.
"""
from __future__ import annotations

import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench import harness

WIDTHS = [32, 40, 48, 56, 64]
# Installed before a key press: when the page is fully redrawn at `width`, window.__lat.done is set.
WATCH = """(width) => {
  window.__lat = {press: null, done: null};
  document.addEventListener('keydown', () => { window.__lat.press = performance.now(); }, {capture: true, once: true});
  const drawn = () => {
    const running = [...document.querySelectorAll("[data-testid='stStatusWidget']")]
      .some(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden');
    const stale = document.querySelector("[data-stale='true']") !== null;
    const heading = [...document.querySelectorAll('h3')].some(h => h.innerText.endsWith(`width ${width}`));
    return !running && !stale && heading;
  };
  const tick = () => {
    if (window.__lat.press !== null && drawn()) { window.__lat.done = performance.now(); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


@contextmanager
def app_server(runs_dir: Path, log: Path):
    """`streamlit run app.py` headless on a free port with its own run store; yields its URL once healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MSCOMPARE_RUNS_DIR": str(runs_dir)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(harness.REPO / "app.py"),
                                 "--server.headless", "true", "--server.port", str(port), "--server.address",
                                 "127.0.0.1", "--browser.gatherUsageStats", "false"], cwd=harness.REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log}") from None
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def descendants(root: int) -> set[int]:
    """Every living process below `root` (/proc), e.g. the Playwright driver and the chromium it started."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = set(), [root]
    while todo:
        up = todo.pop()
        kids = [pid for pid, pp in parent.items() if pp == up and pid not in out]
        out.update(kids)
        todo += kids
    return out


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class Websocket:
    """The page's websocket frames with the browser's own timestamps (DevTools protocol), to time a rerun on the
    server: from the rerun request the browser sends to the script_finished message it gets back."""

    def __init__(self, page):
        self.frames: list[tuple[str, float, bytes]] = []
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.webSocketFrameSent", lambda e: self._add("sent", e))
        cdp.on("Network.webSocketFrameReceived", lambda e: self._add("received", e))
        cdp.send("Network.enable")

    def _add(self, way: str, e: dict) -> None:
        r = e["response"]
        data = base64.b64decode(r["payloadData"]) if r.get("opcode") == 2 else r["payloadData"].encode()
        self.frames.append((way, e["timestamp"], data))

    def rerun_seconds(self) -> float | None:
        """The first request after clear() to the first script_finished after it; None if either is missing."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        sent = next((t for way, t, _ in self.frames if way == "sent"), None)
        for way, t, data in self.frames:
            if way == "received" and sent is not None and t >= sent:
                msg = ForwardMsg()
                try:
                    msg.ParseFromString(data)
                except Exception:  # noqa: BLE001 - a frame that is not a ForwardMsg
                    continue
                if msg.WhichOneof("type") == "script_finished":
                    return t - sent
        return None


def move(page, ws: Websocket, key: str, width: int, server_pid: int, timeout_s: float = 60) -> dict:
    """Press `key` on the width slider and wait for the page drawn at `width`: browser and server seconds, and the
    CPU seconds the server and the browser (chromium and its driver) used meanwhile."""
    page.evaluate(WATCH, width)
    ws.frames.clear()
    browser_pids = descendants(os.getpid()) - {server_pid} - descendants(server_pid)
    cpu0 = cpu_seconds([server_pid]), cpu_seconds(browser_pids)
    page.get_by_role("slider").nth(1).press(key)
    page.wait_for_function("window.__lat.done !== null", timeout=timeout_s * 1000)
    cpu1 = cpu_seconds([server_pid]), cpu_seconds(browser_pids)
    lat = page.evaluate("window.__lat")
    page.wait_for_timeout(50)  # the last websocket events
    return {"move": f"-> {width}", "browser": (lat["done"] - lat["press"]) / 1000, "server": ws.rerun_seconds(),
            "server_cpu": cpu1[0] - cpu0[0], "browser_cpu": cpu1[1] - cpu0[1]}


def walk(page, ws: Websocket, think_s: float, server_pid: int) -> list[dict]:
    """32 -> 64 -> 32 one step at a time."""
    out = []
    for key, path in (("ArrowRight", WIDTHS[1:]), ("ArrowLeft", WIDTHS[-2::-1])):
        for w in path:
            page.wait_for_timeout(think_s * 1000)
            out.append(move(page, ws, key, w, server_pid))
    return out


def line(moves: list[dict]) -> str:
    return ", ".join(f"{m['move']} {m['browser']:.2f}/" + (f"{m['server']:.2f}" if m["server"] is not None else "?")
                     for m in moves)


def main() -> int:
    ap = harness.parser(__doc__, out=str(harness.REPO / "docs" / "bench-browser-latency.txt"), wait_quiet_s=120.0)
    ap.add_argument("--rounds", type=int, default=3, help="timed walks 32 -> 64 -> 32 (8 moves each)")
    ap.add_argument("--think-s", type=float, default=1.0, help="seconds between moves")
    ap.add_argument("--width", type=int, default=1400, help="browser window width in px")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian's chromium is not installed (apt-get install chromium); nothing measured")
        return 1
    rep = harness.Report(a)
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    with app_server(tmp / "runs", tmp / "streamlit.log") as (url, pid), sync_playwright() as p:
        rep.say(f"server: {url}, pid {pid} (log {tmp / 'streamlit.log'}); chromium headless, window {a.width}x1000")
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": a.width, "height": 1000})
        page.set_default_timeout(120_000)
        t0 = time.perf_counter()
        page.goto(f"{url}/architectures")
        page.get_by_role("heading", name="Every unit type on mnist, width 32").wait_for()
        page.locator("[data-testid='stPlotlyChart']").first.wait_for()
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden")
        rep.say(f"first open of /architectures on the cold server: {time.perf_counter() - t0:.2f} s\n")
        ws = Websocket(page)
        rep.say("warm-up walk (not in the summary), browser/server s: " + line(walk(page, ws, a.think_s, pid)))
        moves = []
        for r in range(a.rounds):
            moves += walk(page, ws, a.think_s, pid)
            rep.say(f"round {r + 1}, browser/server s: " + line(moves[-2 * (len(WIDTHS) - 1):]))
        browser.close()
    browser_s = [m["browser"] for m in moves]
    server_s = [m["server"] for m in moves if m["server"] is not None]
    rep.say("")
    rep.say(f"key press to fully redrawn page (browser): median {statistics.median(browser_s):.2f} s, "
            f"max {max(browser_s):.2f} s over {len(browser_s)} moves "
            f"(target <= 1 s: {'met' if max(browser_s) <= 1 else 'NOT met'} by the slowest, "
            f"{'met' if statistics.median(browser_s) <= 1 else 'NOT met'} by the median)")
    if server_s:
        rep.say(f"the same reruns on the server (rerun request to script finished): median "
                f"{statistics.median(server_s):.2f} s, max {max(server_s):.2f} s over {len(server_s)} moves")
    rep.say(f"CPU seconds per move, median: server {statistics.median(m['server_cpu'] for m in moves):.2f}, "
            f"browser (chromium and its driver) {statistics.median(m['browser_cpu'] for m in moves):.2f}, on "
            f"{len(os.sched_getaffinity(0))} cores")
    rep.say(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rep.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
