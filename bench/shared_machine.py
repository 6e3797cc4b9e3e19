"""Owns the shared-machine benchmark: a CLI run's img/s alone and beside browser sessions busy on the app's Predict page, per thread policy.

    .venv/bin/python bench/shared_machine.py [--data-root /work/shared/datasets] [--model googlenet]
        [--dataset cifar10] [--iters 150] [--eval-every 50] [--sessions 4] [--rounds 1] [--timeout-s 180]
        [--policies auto 2: 2:ACTIVE 2:PASSIVE 1:PASSIVE] [--out docs/bench-shared-machine.txt]

The app server is started as the README does (bench/app_throughput.py's start_app). A driver process opens
--sessions headless-chromium pages (one browser, one context each) on the Predict page and, while told to go,
keeps every session busy: pick a sample test image, wait for all five models' predictions, switch the
checkpoint set every third pick, repeat. For each policy the same `python -m mscompare train` run is measured
alone (sessions paused, tabs left open) and beside the busy sessions, in alternating order, so drift cancels.

A policy is THREADS:WAIT_POLICY. THREADS empty = no --threads (the product's auto); WAIT_POLICY "" is
libgomp's own default (spin, then sleep), omitted = OMP_WAIT_POLICY left out of the environment (the
product's default). `auto` = neither: what a user gets. Extra variables for the run: THREADS:WAIT:VAR=VALUE,...
(e.g. 2::GOMP_SPINCOUNT=10000); WAIT `unset` leaves OMP_WAIT_POLICY out (:unset:VAR=VALUE is auto plus VAR).

Done means, for auto: beside >= 0.5x its alone speed, and alone >= 0.9x the best policy's alone speed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_throughput import (CHROMIUM, CHROMIUM_ARGS, PYTHON, REPO, UNSET, CpuMeter, OwnMeter,  # noqa: E402
                            cli_train, descendants, guarded, machine_info, policy_text, start_app, stop_app,
                            wait_quiet)

SAMPLES = REPO / "samples"
SETS = ("mnist", "cifar10")
DEFAULT_POLICIES = ["2:", "2:ACTIVE", "2:PASSIVE", "1:PASSIVE", "auto"]


# ---------------------------------------------------------------- the browser driver (its own process)

async def _choose_sample_input(pg) -> None:
    """Input: Sample. (Switching the checkpoint set changes the Input radio's options, which resets it to Upload.)"""
    sample, upload = pg.get_by_text("Choose a sample."), pg.get_by_text("Upload an image.")
    await sample.or_(upload).first.wait_for()
    if not await sample.count():
        await pg.get_by_role("radiogroup", name="Input").get_by_text("Sample", exact=True).click()
        await sample.wait_for()


async def _interaction(pg, session: int, k: int, state: dict) -> None:
    """One user action: maybe switch the checkpoint set, pick a sample, wait for all five predictions."""
    want = SETS[(k // 3) % 2]
    if state.get("shown") is None:  # switch only from a shown prediction: a fresh page's "Choose a sample." would
        want = state["set"]         # still be on screen (stale) while the switch's rerun resets Input to Upload
    if state.get("set") != want:
        await pg.get_by_role("radiogroup", name="Checkpoint set").get_by_text(want, exact=True).click()
        await _choose_sample_input(pg)
        state["set"], state["shown"] = want, None
    names = sorted(p.name for p in (SAMPLES / want).glob("*.png"))
    name = names[(k * 7 + session * 3) % len(names)]
    if name == state.get("shown"):
        name = names[(names.index(name) + 1) % len(names)]
    await pg.get_by_role("combobox", name="Sample test image").click()
    await pg.get_by_role("option", name=name, exact=True).click()
    await pg.get_by_test_id("stText").get_by_text(name, exact=True).wait_for()
    state["shown"] = name


async def _drive(url: str, sessions: int, step_s: float = 30.0) -> None:
    from playwright.async_api import async_playwright

    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    stop = False
    busy = [False] * sessions
    done = [0] * sessions
    errors: list[str] = []
    seconds: list[float] = []  # each interaction's wall time, from its first click to all five predictions

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(sessions):
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
            pg = await ctx.new_page()
            pg.set_default_timeout(180_000)
            await pg.goto(f"{url}/predict")
            await pg.get_by_role("heading", name="Predict").wait_for()
            await _choose_sample_input(pg)
            pg.set_default_timeout(step_s * 1000)  # a stuck step (e.g. a dropdown closed by a rerun) retries
            pages.append(pg)

        async def session(i: int, pg) -> None:
            state, k = {"set": "mnist"}, i
            while not stop:
                await go.wait()
                if stop:
                    break
                busy[i] = True
                try:
                    t0 = loop.time()
                    await _interaction(pg, i, k, state)
                    seconds.append(loop.time() - t0)
                    done[i] += 1
                except Exception as e:  # noqa: BLE001 - counted and reported; the session starts over
                    lines = str(e).splitlines()
                    where = next((x.strip() for x in lines if "waiting for" in x), "")
                    errors.append(f"session {i} at interaction {k}: {lines[0][:120]} {where[:160]}")
                    print(errors[-1], file=sys.stderr, flush=True)
                    try:
                        await pg.keyboard.press("Escape")
                        await pg.goto(f"{url}/predict", timeout=180_000)
                        await _choose_sample_input(pg)
                    except Exception as e2:  # noqa: BLE001 - the next interaction tries again
                        errors.append(f"session {i}: starting over failed: {str(e2).splitlines()[0][:120]}")
                    state = {"set": "mnist"}
                finally:
                    busy[i] = False
                k += 1

        tasks = [asyncio.create_task(session(i, pg)) for i, pg in enumerate(pages)]
        print("ready", flush=True)
        while True:
            cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if cmd == "go":
                go.set()
                print("going", flush=True)
            elif cmd == "pause":
                go.clear()
                while any(busy):
                    await asyncio.sleep(0.05)
                took = sorted(seconds)
                seconds.clear()
                q = (lambda f: round(took[min(len(took) - 1, int(f * len(took)))], 2)) if took else (lambda f: None)
                print(json.dumps({"paused": sum(done), "errors": errors[-5:], "n_errors": len(errors),
                                  "p50_s": q(0.5), "p95_s": q(0.95), "max_s": q(1.0)}), flush=True)
            elif cmd == "shot":
                for i, pg in enumerate(pages[:2]):
                    await pg.screenshot(path=str(REPO / "tests" / "screenshots" / f"bench-shared-predict{i}.png"))
                print("shot", flush=True)
            else:  # quit, or stdin closed
                stop = True
                go.set()
                await asyncio.wait(tasks, timeout=60)
                break
        await browser.close()


class Driver:
    """The driver process, told to go and pause over a pipe."""

    def __init__(self, url: str, sessions: int):
        self.proc = subprocess.Popen([PYTHON, __file__, "--drive", url, "--sessions", str(sessions)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        self._expect("ready")

    def _send(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"browser driver said {line!r} instead of {word!r} (exit {self.proc.poll()})")

    def go(self) -> None:
        if self._send("go") != "going":
            raise RuntimeError("browser driver did not start")

    def pause(self) -> dict:
        return json.loads(self._send("pause"))

    def shot(self) -> None:
        self._send("shot")

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=90)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the benchmark

def parse_policy(spec: str) -> tuple[str, int | None, object, dict]:
    """'auto' | 'THREADS:WAIT[:VAR=VALUE,...]' -> (name, threads or None, wait policy or UNSET, extra env)."""
    if spec == "auto":
        return "auto (no --threads, OMP_WAIT_POLICY unset)", None, UNSET, {}
    threads, _, rest = spec.partition(":")
    wait, _, extra = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
    name = (f"threads={threads or 'auto'}, "
            + ("OMP_WAIT_POLICY unset" if wait == "unset" else f"OMP_WAIT_POLICY={wait!r}")
            + (" (libgomp default)" if wait == "" else "") + "".join(f", {k}={v}" for k, v in env.items()))
    return name, int(threads) if threads else None, UNSET if wait == "unset" else wait, env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drive", help=argparse.SUPPRESS)
    ap.add_argument("--data-root", default="/work/shared/datasets")
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50,
                    help="eval points on the 2,000-image subset; they are left out of img/s, and they give a rate "
                         "for a run stopped at --timeout-s")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="alone/beside pairs per policy")
    ap.add_argument("--warm-s", type=float, default=3.0, help="sessions busy this long before a beside run starts")
    ap.add_argument("--warm-up-s", type=float, default=20.0, help="sessions busy this long before the first run")
    ap.add_argument("--timeout-s", type=float, default=180.0, help="a run still going is stopped here (partial)")
    ap.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES)
    ap.add_argument("--disturbed", type=float, default=0.25,
                    help="cores kept busy by other processes above which a measurement is taken again")
    ap.add_argument("--retries", type=int, default=2, help="times a disturbed measurement is taken again")
    ap.add_argument("--wait-quiet-s", type=float, default=900.0, help="wait this long at most for a quiet machine "
                    "before starting (0 = don't wait)")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench-shared-machine.txt"), help="'' = don't write")
    ap.add_argument("--append", action="store_true", help="add this report to --out instead of replacing it")
    a = ap.parse_args()
    if a.drive:
        asyncio.run(_drive(a.drive, a.sessions))
        return 0

    import tempfile

    report = ["# " + " ".join(["bench/shared_machine.py"] + sys.argv[1:]), *machine_info()]
    for line in report:
        print(line, flush=True)

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    if a.wait_quiet_s:
        say(f"waited {wait_quiet(max_wait=a.wait_quiet_s):.0f} s for a quiet machine")
    (REPO / "tests" / "screenshots").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    t_start = time.time()
    app, url = start_app(a.data_root, str(work / "runs"), log=work / "streamlit.log")
    policies = [parse_policy(s) for s in a.policies]
    results: dict[str, dict[str, list]] = {name: {"alone": [], "beside": []} for name, *_ in policies}
    try:
        driver = Driver(url, a.sessions)
        say(f"{a.model} on {a.dataset}, {a.iters} iterations (eval every {a.eval_every} on 2,000 test images, "
            f"not timed), via `python -m mscompare train`; beside = {a.sessions} chromium sessions busy on the "
            f"Predict page of {url} (server pid {app.pid})")
        say("")
        driver.go()  # warm up: both checkpoint sets loaded and cached by the server, every page drawn once
        time.sleep(a.warm_up_s)
        counts = {"shown": driver.pause()["paused"]}
        n = 0
        for r in range(a.rounds):
            for pi, (name, threads, wait, extra_env) in enumerate(policies):
                for where in (("alone", "beside") if (r + pi) % 2 == 0 else ("beside", "alone")):
                    def measure():
                        if where == "beside":
                            driver.go()
                            time.sleep(a.warm_s)
                        res = cli_train(a.model, a.dataset, a.data_root, a.iters, threads=threads,
                                        wait_policy=wait, preset="quick", eval_every=a.eval_every,
                                        timeout=a.timeout_s, extra_env=extra_env)
                        if where == "beside":
                            st = driver.pause()
                            res["ui_per_s"] = (st["paused"] - counts["shown"]) / res["wall"]
                            counts["shown"] = st["paused"]
                            res["driver"] = st
                        return res

                    res, others, (sc, bc, _) = guarded(
                        measure, [CpuMeter(lambda: {app.pid}),
                                  CpuMeter(lambda: descendants(driver.proc.pid) | {driver.proc.pid}), OwnMeter()],
                        a.disturbed, a.retries, say)
                    res["disturbed"] = others > a.disturbed
                    cores = {"run": res["cpu"] / res["wall"], "server": sc, "browser": bc, "others": others}
                    extra = " DISTURBED" if res["disturbed"] else ""
                    if where == "beside":
                        st = res["driver"]
                        if n == 0:
                            driver.shot()
                        extra += (f"; {res['ui_per_s']:.2f} predictions shown/s, one takes p50 {st['p50_s']} s, "
                                  f"p95 {st['p95_s']} s, max {st['max_s']} s")
                        if st["n_errors"]:
                            extra += f"; {st['n_errors']} session errors so far, last: {st['errors'][-1]}"
                        n += 1
                    results[name][where].append(res)
                    say(f"  {name:{max(52, *(len(p[0]) for p in policies))}} {where:6} {res['images_per_s']:6.0f} img/s"
                        f"{' (PARTIAL: stopped at ' + str(res['iters_done']) + ' iters)' if res['partial'] else ''}"
                        f", {res['wall']:.0f} s; cores busy: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
                        + f"; {policy_text(res['policy'])}{extra}")
        driver.close()
    finally:
        stop_app(app)

    mean = {name: {w: sum(x["images_per_s"] for x in v[w]) / len(v[w]) for w in v} for name, v in results.items()}
    best = max(m["alone"] for m in mean.values())
    say("")
    width = max(52, *(len(name) for name in mean))
    say(f"{'policy':{width}} {'alone':>7} {'beside':>7} {'beside/alone':>12} {'alone/best alone':>16}")
    for name, m in mean.items():
        say(f"{name:{width}} {m['alone']:7.0f} {m['beside']:7.0f} {m['beside'] / m['alone']:12.2f} "
            f"{m['alone'] / best:16.2f}")
    auto = next((name for name, th, w, env in policies if th is None and w is UNSET and not env), None)
    if auto:
        m = mean[auto]
        ok1, ok2 = m["beside"] / m["alone"] >= 0.5, m["alone"] / best >= 0.9
        say(f"\ndefault policy ({auto}): beside/alone {m['beside'] / m['alone']:.2f} (target >= 0.5: "
            f"{'met' if ok1 else 'NOT met'}); alone/best alone {m['alone'] / best:.2f} (target >= 0.9: "
            f"{'met' if ok2 else 'NOT met'})")
    bad = sum(x["disturbed"] for v in results.values() for w in v.values() for x in w)
    if bad:
        say(f"{bad} measurement(s) marked DISTURBED: other processes kept more than {a.disturbed} cores busy "
            f"even after {a.retries} retries; rerun on a quiet machine before trusting them")
    say(f"whole benchmark: {time.time() - t_start:.0f} s")
    if a.out:
        with open(a.out, "a" if a.append else "w") as f:
            f.write(("\n" if a.append else "") + "\n".join(report) + "\n")
        print(f"{'appended to' if a.append else 'wrote'} {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
