"""Owns the Architectures page benchmark: server-side seconds per slider move, from cold caches, with and without the background prefetch.

    .venv/bin/python bench/architectures_latency.py [--think-s 1.0] [--rounds 1] [--out docs/bench-architectures.txt]

The page runs under Streamlit's AppTest in this process (the script as the server runs it, without the
browser's drawing). A user's walk over the sliders: on MNIST from the paper's unit count (0) to 1, 2, 3, 4,
then the width 32 -> 40 -> 48 -> 56, then CIFAR-10 (units 4, width 56) and back down to 1 unit. Before each move
the user "looks" for --think-s seconds (the prefetch thread works meanwhile). Every cache (Streamlit's and
the library's) is cleared before each walk, so each first visit really is a first visit. The two modes
alternate --rounds times. Target: every move within 0.5 s on a quiet machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_throughput import Report, machine_info, wait_quiet  # noqa: E402

# (label, widget index, value): slider 0 = units, slider 1 = width, selectbox 0 = dataset
WALK = [("units 1", "slider", 0, 1), ("units 2", "slider", 0, 2), ("units 3", "slider", 0, 3),
        ("units 4", "slider", 0, 4), ("width 40", "slider", 1, 40), ("width 48", "slider", 1, 48),
        ("width 56", "slider", 1, 56), ("cifar10", "selectbox", 0, "cifar10"), ("units 3", "slider", 0, 3),
        ("units 2", "slider", 0, 2), ("units 1", "slider", 0, 1)]


def walk(prefetch_on: bool, think_s: float) -> list[tuple[str, float]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from mscompare import profile

    st.cache_data.clear()
    profile.cached_profile.cache_clear()
    real = profile.prefetch
    if not prefetch_on:
        profile.prefetch = lambda *a, **k: None
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)  # through app.py's navigation
        at.run()
        at.switch_page("pages/architectures.py")
        t0 = time.perf_counter()
        at.run()
        times = [("first open (units 0, width 32)", time.perf_counter() - t0)]
        for label, kind, i, value in WALK:
            time.sleep(think_s)
            getattr(at, kind)[i].set_value(value)
            t0 = time.perf_counter()
            at.run()
            times.append((label, time.perf_counter() - t0))
            if at.exception:
                raise RuntimeError(f"the page failed after {label}: {at.exception[0].value}")
        return times
    finally:
        profile.prefetch = real
        while profile._prefetch["thread"] is not None:  # let a walk's leftovers finish before the next walk
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--think-s", type=float, default=1.0, help="seconds between slider moves")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--wait-quiet-s", type=float, default=300.0)
    ap.add_argument("--out", default=str(REPO / "docs" / "bench-architectures.txt"), help="'' = don't write")
    a = ap.parse_args()
    import os

    os.environ.setdefault("MSCOMPARE_RUNS_DIR", str(Path("/tmp") / "bench-arch-runs"))
    import torch

    torch.set_num_threads(1)  # as app.py sets it for the server
    rep = Report()
    say = rep.say

    say("# bench/architectures_latency.py " + " ".join(sys.argv[1:]))
    for line in machine_info():
        say(line)
    say(f"waited {wait_quiet(max_wait=a.wait_quiet_s):.0f} s for a quiet machine")
    say(f"page reruns under AppTest, caches cleared before each walk, {a.think_s:.1f} s between moves\n")
    worst = {}
    for r in range(a.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            times = walk(on, a.think_s)
            mode = "prefetch on " if on else "prefetch off"
            moves = times[1:]
            worst.setdefault(on, []).append(max(t for _, t in moves))
            say(f"round {r + 1} {mode}: first open {times[0][1]:.2f} s; moves: "
                + ", ".join(f"{lbl} {t:.2f}" for lbl, t in moves))
            say(f"   slowest move {max(t for _, t in moves):.2f} s, mean {sum(t for _, t in moves) / len(moves):.2f} s")
    for on in (True, False):
        say(f"prefetch {'on ' if on else 'off'}: slowest move over rounds {max(worst[on]):.2f} s "
            f"(target <= 0.5 s: {'met' if max(worst[on]) <= 0.5 else 'NOT met'})")
    rep.write(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
