"""Owns the sweep benchmark: wall time of the five-model quick job through `python -m mscompare sweep`, local executor at its default workers vs one at a time.

    .venv/bin/python bench/sweep_speedup.py [--data-root /work/shared/datasets] [--dataset mnist] [--width 32]
        [--rounds 1] [--iters N] [--out docs/bench-sweep.txt] [--append]

Each measurement is the whole CLI command a user types (process start, data load, five trials, the store),
into a fresh temporary runs folder, so nothing is skipped as already finished. The default (`--workers`
left out: the measured best for the cores, one intra-op thread per worker) and `--workers 1` alternate
--rounds times in this one process run, so drift cancels. Target: default >= 1.3x faster.
Run it on a quiet machine: other processes' CPU during each measurement is reported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_throughput import PYTHON, Report, REPO, THREAD_VARS, OwnMeter, guarded, machine_info, wait_quiet  # noqa: E402

MODELS = ["alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"]


def sweep(a, workers: int | None) -> dict:
    """One sweep command; returns wall seconds, the trials' JSON lines and the final summary."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}  # the product's own thread policy
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as runs:
        cmd = [PYTHON, "-m", "mscompare", "sweep", "--models", *MODELS, "--datasets", a.dataset,
               "--widths", str(a.width), "--preset", "quick", "--data-root", a.data_root, "--runs-dir", runs,
               "--json"] + (["--workers", str(workers)] if workers else []) + (
               ["--iters", str(a.iters)] if a.iters else [])
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"sweep failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    summary = lines[-1]
    if summary.get("done") != len(MODELS) or summary.get("failed"):
        raise RuntimeError(f"sweep did not finish every trial: {summary}")
    return {"wall": wall, "trials": lines[:-1], "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/work/shared/datasets")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="default/1-worker pairs, alternating order")
    ap.add_argument("--iters", type=int, default=None, help="default: the quick preset's (for quick checks)")
    ap.add_argument("--disturbed", type=float, default=0.25, help="cores busy elsewhere that void a measurement")
    ap.add_argument("--retries", type=int, default=2, help="times a disturbed measurement is taken again")
    ap.add_argument("--wait-quiet-s", type=float, default=600.0)
    ap.add_argument("--out", default=str(REPO / "docs" / "bench-sweep.txt"), help="'' = don't write")
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args()

    rep = Report()
    say = rep.say

    say("# bench/sweep_speedup.py " + " ".join(sys.argv[1:]))
    for line in machine_info():
        say(line)
    waited = wait_quiet(max_wait=a.wait_quiet_s)
    say(f"waited {waited:.0f} s for a quiet machine")
    say(f"`python -m mscompare sweep --models {' '.join(MODELS)} --datasets {a.dataset} --widths {a.width} "
        f"--preset quick{' --iters ' + str(a.iters) if a.iters else ''} --data-root ... --runs-dir <fresh>`, "
        "--workers left out (the default) vs --workers 1\n")
    walls: dict[str, list[float]] = {"default": [], "1": []}
    for i in range(a.rounds):
        for w in ((None, 1) if i % 2 == 0 else (1, None)):
            r, others, _ = guarded(lambda: sweep(a, w), [OwnMeter()], a.disturbed, a.retries, say)
            key = "default" if w is None else "1"
            walls[key].append(r["wall"])
            say(f"round {i + 1} workers {key:>7}: {r['wall']:6.1f} s wall; other processes {others:.2f} cores{' DISTURBED' if others > a.disturbed else ''}; "
                + ", ".join(f"{t['model']} {t['seconds']:.0f} s ({100 * t['test_acc']:.1f}%)" for t in r["trials"]))
    wd, w1 = (sum(v) / len(v) for v in (walls["default"], walls["1"]))
    say(f"\nmean: default workers {wd:.1f} s, one at a time {w1:.1f} s: speedup {w1 / wd:.2f}x "
        f"(target >= 1.3x: {'met' if w1 / wd >= 1.3 else 'NOT met'})")
    rep.write(a.out, a.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
