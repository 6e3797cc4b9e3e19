"""Owns the app benchmark: a run started in the browser vs the CLI, an idle open tab's CPU, and the five-model job at 1 vs auto concurrency.

    .venv/bin/python bench/app_throughput.py [--data-root /work/shared/datasets] [--model mobilenet]
        [--dataset mnist] [--iters 300] [--rounds 2] [--idle-s 30] [--job-rounds 1] [--no-job]
        [--out docs/bench-app-throughput.txt]

1. Starts the server as the README does (`.venv/bin/streamlit run app.py` from the repo root, headless, on a
   free port, MSCOMPARE_DATA_ROOT=--data-root, a temporary MSCOMPARE_RUNS_DIR), opens the Train page in
   headless chromium, keeps only --model in the Models multiselect, sets the iterations, starts the batch and
   keeps the tab open until it is done; the run's images_per_s comes from the run store. The same run goes
   through `python -m mscompare train` (threads auto); app and CLI alternate --rounds times so drift cancels.
   Target: app img/s / CLI img/s >= 0.9.
2. With the Train page still open on the finished batch, the server's CPU time (utime+stime of the streamlit
   process, /proc/<pid>/stat) over --idle-s seconds of wall time. Target: < 15% of one core.
3. "The five models, quick preset job" through RunManager (what the app uses) at concurrency auto vs 1, on
   the real dataset, in this one process run. Target: auto >= 1.3x faster.

The server, the CLI runs and the job's workers get this environment minus OMP_NUM_THREADS/MKL_NUM_THREADS/
OMP_WAIT_POLICY, so they run under the product's own thread policy. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "MSCOMPARE_THREAD_SOURCE")
TICK = os.sysconf("SC_CLK_TCK")
UNSET = object()


# ---------------------------------------------------------------- machine, processes, CPU time

def machine_info() -> list[str]:
    """Date, CPU model, cores, the ISA flags that matter for fp32/bf16 training, torch version, load."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    flags = set((re.search(r"^Flags:\s*(.+)$", lscpu, re.M) or [None, ""])[1].split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "not installed"
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "mscompare", "app.py",
                                "ui.py", "pages"], capture_output=True, text=True, cwd=REPO).stdout.split("\n")
        code = f"code: commit {head.strip()}" + (f" + uncommitted changes to {sum(bool(x) for x in dirty)} app/"
                                                 f"library files" if any(dirty) else "")
    except OSError:
        code = "code: ?"
    return [f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
            f"cpu: {model[1].strip() if model else platform.processor() or '?'}, {len(os.sched_getaffinity(0))} "
            f"cores usable; flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted),
            f"torch {tv}, python {platform.python_version()}; load average at start {' '.join(load)}", code]


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of one process (its own threads; with `reaped`, plus its children that have ended and been
    waited for, e.g. the app's finished worker processes), in seconds; 0 if it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15 if reaped else 13]) / TICK
    except (OSError, IndexError):
        return 0.0


def _ppids() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(root: int) -> set[int]:
    pp = _ppids()
    kids: dict[int, list[int]] = {}
    for pid, ppid in pp.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def bench_pids(server: int) -> set[int]:
    """Processes this benchmark started that still run, but not the server and its workers (Playwright's
    driver, chromium)."""
    return descendants(os.getpid()) - descendants(server) - {server}


def chromium_pids(exclude_under: int | None = None) -> set[int]:
    """The chromium processes this benchmark started (descendants of this process, not of the server)."""
    skip = descendants(exclude_under) | {exclude_under} if exclude_under else set()
    out = set()
    for pid in descendants(os.getpid()) - skip:
        try:
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                out.add(pid)
        except OSError:
            pass
    return out


class CpuMeter:
    """CPU seconds used by some processes between start() and stop(): returns (CPU s, wall s)."""

    def __init__(self, pids_fn, reaped: bool = False):
        self.pids_fn, self.reaped = pids_fn, reaped

    def start(self):
        self.t0, self.c0 = time.perf_counter(), {p: cpu_seconds(p, self.reaped) for p in self.pids_fn()}
        return self

    def stop(self) -> tuple[float, float]:
        wall = time.perf_counter() - self.t0
        used = sum(cpu_seconds(p, self.reaped) - self.c0.get(p, 0.0) for p in self.pids_fn() | set(self.c0))
        return max(used, 0.0), wall


class OwnMeter:
    """CPU seconds of this process and its children that ended and were waited for (CLI runs, job workers)."""

    def start(self):
        t = os.times()
        self.t0, self.c0 = time.perf_counter(), t.user + t.system + t.children_user + t.children_system
        return self

    def stop(self) -> tuple[float, float]:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system - self.c0, time.perf_counter() - self.t0


def wait_quiet(limit: float = 0.15, window: float = 5.0, needed: int = 3, max_wait: float = 900.0) -> float:
    """Wait until other processes keep fewer than `limit` cores busy for `needed` windows in a row (call it while
    this benchmark itself is idle). Returns the seconds waited (max_wait: gave up)."""
    t0, quiet = time.perf_counter(), 0
    while quiet < needed and time.perf_counter() - t0 < max_wait:
        m = MachineMeter().start()
        time.sleep(window)
        quiet = quiet + 1 if m.stop() < limit else 0
    return time.perf_counter() - t0


def guarded(measure, meters, limit: float, retries: int, note, side=()) -> tuple[dict, float, list]:
    """Run `measure()`; if other processes (the machine's busy cores minus what `meters` account for) kept more
    than `limit` cores busy, wait for a quiet machine and measure again, up to `retries` times.
    Returns (result, cores kept busy by others, [cores busy per meter, then per `side` meter (measured alongside,
    already inside `meters`)]) of the measurement returned."""
    for attempt in range(retries + 1):
        machine, ms = MachineMeter().start(), [m.start() for m in (*meters, *side)]
        r = measure()
        busy = machine.stop()
        cores = [c / w for c, w in (m.stop() for m in ms)]
        others = max(0.0, busy - sum(cores[:len(meters)]))
        if others <= limit or attempt == retries:
            return r, others, cores
        waited = wait_quiet()
        note(f"   (other processes kept {others:.2f} cores busy during that measurement: measuring it again "
             f"after {waited:.0f} s of waiting for a quiet machine)")
    raise AssertionError("unreachable")


class MachineMeter:
    """Cores busy on the whole machine between start() and stop() (/proc/stat), to spot other work."""

    @staticmethod
    def _busy() -> float:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / TICK  # all but idle and iowait, guest time is inside user

    def start(self):
        self.t0, self.b0 = time.perf_counter(), self._busy()
        return self

    def stop(self) -> float:
        return (self._busy() - self.b0) / (time.perf_counter() - self.t0)


# ---------------------------------------------------------------- the app server and the browser

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXTRA_ENV: dict[str, str] = {}  # --env: set for the server, the CLI runs and the job's workers alike


def product_env(**extra) -> dict:
    """This environment without thread settings, so every process runs under the product's own policy
    (plus --env)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(EXTRA_ENV, **extra)
    return env


def start_app(data_root: str, runs_dir: str, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`.venv/bin/streamlit run app.py` from the repo root (README), headless, on a free port."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    streamlit = str(VENV_BIN / "streamlit") if (VENV_BIN / "streamlit").exists() else "streamlit"
    proc = subprocess.Popen([streamlit, "run", "app.py", "--server.headless", "true", "--server.port", str(port)],
                            cwd=REPO, env=product_env(MSCOMPARE_DATA_ROOT=data_root, MSCOMPARE_RUNS_DIR=runs_dir),
                            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not answer /_stcore/health within 120 s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# ---------------------------------------------------------------- one run through the CLI

def cli_train(model: str, dataset: str, data_root: str, iters: int, *, threads: int | None = None,
              wait_policy=UNSET, preset: str = "quick", eval_every: int | None = None,
              timeout: float | None = None, extra_env: dict | None = None) -> dict:
    """One `python -m mscompare train ... --json` process. wait_policy UNSET leaves OMP_WAIT_POLICY out of
    its environment (the product default), "" is libgomp's own default. Returns images_per_s (from the final
    line, or from the last progress line if the run was stopped at `timeout`: partial=True), the process's wall
    and CPU seconds, and the thread policy it recorded."""
    env = product_env(**(extra_env or {}))
    if wait_policy is not UNSET:
        env["OMP_WAIT_POLICY"] = wait_policy
    with tempfile.TemporaryDirectory(prefix="bench-cli-runs-") as runs, tempfile.TemporaryFile("w+") as err:
        cmd = [PYTHON, "-m", "mscompare", "train", "--model", model, "--dataset", dataset, "--data-root",
               data_root, "--preset", preset, "--iters", str(iters), "--json", "--runs-dir", runs]
        if eval_every:
            cmd += ["--eval-every", str(eval_every)]
        if threads:
            cmd += ["--threads", str(threads)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: [lines.append(s) for s in proc.stdout], daemon=True)
        reader.start()
        deadline = None if timeout is None else t0 + timeout
        partial = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                partial = True
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        reader.join(5)
        events = [json.loads(s) for s in lines if s.strip().startswith("{")]
        final = next((e for e in reversed(events) if "event" not in e), None)
        if final is None and not partial:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read()[-1500:]}")
        progress = [e for e in events if e.get("event") == "progress"]
        ips = final["images_per_s"] if final else (progress[-1]["images_per_s"] if progress else 0.0)
        pol = {}
        if final:
            from mscompare.runs import RunStore

            row = RunStore(runs).get(final["run_id"]) or {}
            pol = json.loads(row.get("env") or "{}").get("thread_policy", {})
        return {"images_per_s": ips, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "partial": partial,
                "iters_done": final["iters"] if final else (progress[-1]["iter"] if progress else 0),
                "policy": pol}


def policy_text(pol: dict) -> str:
    if not pol:
        return "?"
    text = f"{pol.get('threads')} threads, OMP_WAIT_POLICY={pol.get('wait_policy')!r} ({pol.get('source')})"
    if pol.get("adaptive"):
        text += (f", adaptive: {pol.get('switches', 0)} switches, min {pol.get('min_threads')}, "
                 f"{pol.get('threads_at_end')} at the end")
    return text


# ---------------------------------------------------------------- one run through the app's Train page

def app_run(page, url: str, store, model: str, dataset: str, iters: int, shot: Path | None = None) -> dict:
    """Start a one-model batch on the Train page and keep the tab open until it finishes."""
    from mscompare.models import list_units

    page.goto(f"{url}/train")
    page.get_by_role("button", name="Start training").wait_for()
    page.get_by_role("combobox", name="Dataset").click()  # the first found (alphabetical) is not the CLI's
    page.get_by_role("option", name=dataset, exact=True).click()
    for m in list_units():
        if m != model:
            page.get_by_role("button", name=f"Remove {m}").click()
    box = page.get_by_label("Iterations (0 = preset's)")
    box.fill(str(iters))
    box.press("Tab")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Queued 1 run as batch").wait_for()
    page.wait_for_url(re.compile(r"batch="))
    batch = re.search(r"batch=([^&]+)", page.url)[1]
    page.get_by_text(re.compile(rf"^{model}: (running|done)")).wait_for(timeout=300_000)
    page.get_by_text("0 of 1 run active").wait_for(timeout=3_600_000)
    if shot:
        page.wait_for_timeout(1000)
        page.screenshot(path=shot, full_page=True)
    deadline = time.time() + 30  # the page may show the live "done" a moment before the store has it
    while (rows := store.list(batch=batch)) and rows[0]["status"] != "done" and time.time() < deadline:
        time.sleep(0.2)
    assert len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["dataset"] == dataset, rows
    row = rows[0]
    return {"batch": batch, "images_per_s": row["images_per_s"], "seconds": row["seconds"],
            "policy": json.loads(row["env"] or "{}").get("thread_policy", {})}


# ---------------------------------------------------------------- the five-model job through RunManager

def _threads(pol: dict) -> str:
    """Threads a run started with, and for an adaptive run the fewest it went down to and those at its end."""
    if pol.get("adaptive") and (pol.get("switches") or pol.get("threads_at_end") != pol.get("threads")):
        return f"{pol['threads']}(min {pol.get('min_threads')}, end {pol.get('threads_at_end')})"
    return str(pol.get("threads"))


def five_model_job(dataset: str, data_root: str, concurrency: int, iters: int | None = None) -> dict:
    """Wall time of all five models under the quick preset, queued at once, `concurrency` (0 = auto) at a time."""
    from mscompare.config import config_for, preset
    from mscompare.jobs import RunManager
    from mscompare.models import list_units
    from mscompare.runs import RunStore

    saved = {k: os.environ.pop(k) for k in THREAD_VARS if k in os.environ}  # workers inherit the product policy
    added = {k: v for k, v in EXTRA_ENV.items() if k not in os.environ}
    os.environ.update(EXTRA_ENV)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-job-") as runs:
            store = RunStore(runs)
            t0 = time.perf_counter()
            mgr = RunManager(store, concurrency=concurrency)
            tcfg = preset("quick", dataset, device="auto", data_root=data_root, iters=iters)  # the app's default
            ids = mgr.submit_many([(config_for(m, dataset), tcfg) for m in list_units()], tag="bench",
                                  batch="job")  # as the app's Start does (Service.start)
            mgr.wait()
            wall = time.perf_counter() - t0
            rows = store.list(ids=ids)
            bad = [f"{r['model']} {r['status']}: {r['message']}" for r in rows if r["status"] != "done"]
            if bad:
                raise RuntimeError("job runs did not finish: " + "; ".join(bad))
            return {"concurrency": mgr.concurrency, "wall": wall,
                    "runs": {r["model"]: (r["seconds"], _threads(json.loads(r["env"])["thread_policy"]))
                             for r in rows}}
    finally:
        for k in added:
            os.environ.pop(k, None)
        os.environ.update(saved)



class Report:
    """A benchmark's report: say() prints a line and keeps it; write() saves the lines to --out ('' = don't)."""

    def __init__(self):
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, out: str, append: bool = False) -> None:
        if out:
            with open(out, "a" if append else "w") as f:
                f.write(("\n" if append else "") + "\n".join(self.lines) + "\n")
            print(f"{'appended to' if append else 'wrote'} {out}")


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/work/shared/datasets")
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="app/CLI pairs, alternating order")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--job-rounds", type=int, default=1, help="auto/1 pairs of the five-model job (0 = skip)")
    ap.add_argument("--job-dataset", default=None, help="default: --dataset")
    ap.add_argument("--job-iters", type=int, default=None, help="default: the quick preset's (for quick checks)")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench-app-throughput.txt"), help="'' = don't write")
    ap.add_argument("--shots", default=str(REPO / "tests" / "screenshots"))
    ap.add_argument("--disturbed", type=float, default=0.25,
                    help="cores kept busy by other processes above which a measurement is taken again")
    ap.add_argument("--retries", type=int, default=2, help="times a disturbed measurement is taken again")
    ap.add_argument("--wait-quiet-s", type=float, default=900.0, help="wait this long at most for a quiet machine "
                    "before starting (0 = don't wait)")
    ap.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                    help="set for the server, the CLI runs and the job (e.g. OMP_WAIT_POLICY=PASSIVE), to A/B a policy")
    ap.add_argument("--append", action="store_true", help="add this report to --out instead of replacing it")
    a = ap.parse_args()
    EXTRA_ENV.update(kv.split("=", 1) for kv in a.env)

    from playwright.sync_api import sync_playwright

    from mscompare.runs import RunStore

    report = ["# " + " ".join(["bench/app_throughput.py"] + sys.argv[1:]), *machine_info()]
    if EXTRA_ENV:
        report.append("environment for the server, CLI and job: " + " ".join(f"{k}={v}" for k, v in EXTRA_ENV.items()))

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    for line in report:
        print(line, flush=True)
    if a.wait_quiet_s:
        say(f"waited {wait_quiet(max_wait=a.wait_quiet_s):.0f} s for a quiet machine")
    shots = Path(a.shots)
    shots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    store = RunStore(work / "runs")
    app, url = start_app(a.data_root, str(work / "runs"), log=work / "streamlit.log")
    say(f"server: {url}, pid {app.pid} (log {work / 'streamlit.log'})")
    app_rates, cli_rates = [], []
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            say(f"\n1. {a.model} on {a.dataset}, quick preset, {a.iters} iterations: Train page vs CLI")
            for i in range(a.rounds):
                for kind in (("app", "cli") if i % 2 == 0 else ("cli", "app")):
                    meters = [CpuMeter(lambda: {app.pid}, reaped=True), CpuMeter(lambda: bench_pids(app.pid)),
                              OwnMeter()]
                    if kind == "app":
                        r, others, (swc, bc, _, sc) = guarded(
                            lambda: app_run(page, url, store, a.model, a.dataset, a.iters, shots / f"bench-app-run{i}.png"),
                            meters, a.disturbed, a.retries, say, side=[CpuMeter(lambda: {app.pid})])
                        app_rates.append(r["images_per_s"])
                        say(f"   round {i + 1} app: {r['images_per_s']:7.0f} img/s  ({policy_text(r['policy'])}; "
                            f"cores busy while it ran with the tab open: worker ~{swc - sc:.2f}, server {sc:.2f}, "
                            f"browser {bc:.2f}, other processes {others:.2f}"
                            f"{' DISTURBED' if others > a.disturbed else ''})")
                    else:
                        r, others, _ = guarded(lambda: cli_train(a.model, a.dataset, a.data_root, a.iters),
                                               meters, a.disturbed, a.retries, say)
                        cli_rates.append(r["images_per_s"])
                        say(f"   round {i + 1} CLI: {r['images_per_s']:7.0f} img/s  ({policy_text(r['policy'])}; "
                            f"the process {r['cpu'] / r['wall']:.2f} cores busy; other processes {others:.2f}"
                            f"{' DISTURBED' if others > a.disturbed else ''})")
            app_m, cli_m = sum(app_rates) / len(app_rates), sum(cli_rates) / len(cli_rates)
            ratio = app_m / cli_m
            pairs = sorted(x / y for x, y in zip(app_rates, cli_rates))
            say(f"   mean: app {app_m:.0f} img/s, CLI {cli_m:.0f} img/s, app/CLI {ratio:.2f} "
                f"(target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}); per round app/CLI "
                + ", ".join(f"{x:.2f}" for x in pairs) + f", median {pairs[len(pairs) // 2]:.2f}")

            say(f"\n2. idle server, Train page open on the finished batch, {a.idle_s:.0f} s")
            page.wait_for_timeout(3000)  # the fragment's last redraw after the batch finished
            srv = CpuMeter(lambda: {app.pid}).start()
            brw = CpuMeter(lambda: chromium_pids(app.pid)).start()
            machine = MachineMeter().start()
            time.sleep(a.idle_s)
            busy = machine.stop()
            (sc, sw), (bc, bw) = srv.stop(), brw.stop()
            page.screenshot(path=shots / "bench-app-idle.png", full_page=True)
            say(f"   streamlit process: {sc:.2f} CPU s in {sw:.1f} s = {sc / sw:.1%} of a core "
                f"(target < 15%: {'met' if sc / sw < 0.15 else 'NOT met'}); chromium: {bc / bw:.1%} of a core; "
                f"the whole machine {busy:.2f} cores busy")
            browser.close()
    finally:
        stop_app(app)

    if a.job_rounds:
        ds = a.job_dataset or a.dataset
        say(f"\n3. the five models, quick preset job, on {ds} ({a.data_root}), RunManager concurrency auto vs 1")
        walls: dict[str, list[float]] = {"auto": [], "1": []}
        for i in range(a.job_rounds):
            for c in ((0, 1) if i % 2 == 0 else (1, 0)):
                r, others, _ = guarded(lambda: five_model_job(ds, a.data_root, c, a.job_iters), [OwnMeter()],
                                       a.disturbed, a.retries, say)
                walls["auto" if c == 0 else "1"].append(r["wall"])
                say(f"   round {i + 1} concurrency {r['concurrency']}{' (auto)' if c == 0 else ''}: "
                    f"{r['wall']:6.1f} s wall, other processes {others:.2f} cores"
                    f"{' DISTURBED' if others > a.disturbed else ''}; per run seconds/threads: "
                    + ", ".join(f"{m} {s:.0f} s/{t}" for m, (s, t) in r["runs"].items()))
        wa, w1 = sum(walls["auto"]) / len(walls["auto"]), sum(walls["1"]) / len(walls["1"])
        say(f"   mean: auto {wa:.1f} s, one at a time {w1:.1f} s: speedup {w1 / wa:.2f}x "
            f"(target >= 1.3x: {'met' if w1 / wa >= 1.3 else 'NOT met'})")

    if a.out:
        with open(a.out, "a" if a.append else "w") as f:
            f.write(("\n" if a.append else "") + "\n".join(report) + "\n")
        print(f"\n{'appended to' if a.append else 'wrote'} {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
