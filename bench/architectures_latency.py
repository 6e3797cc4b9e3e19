"""Owns the Architectures page benchmark: server-side seconds per slider move from cold caches, prefetch on vs off."""
from __future__ import annotations

import os
import time

from bench import harness

# A user's walk over the sliders (label, widget kind, index, value): slider 0 = units, slider 1 = width,
# selectbox 0 = dataset. From MNIST at the paper's unit count up to 4 units, the width to 56, then CIFAR-10
# and back down to 1 unit.
WALK = [("units 1", "slider", 0, 1), ("units 2", "slider", 0, 2), ("units 3", "slider", 0, 3),
        ("units 4", "slider", 0, 4), ("width 40", "slider", 1, 40), ("width 48", "slider", 1, 48),
        ("width 56", "slider", 1, 56), ("cifar10", "selectbox", 0, "cifar10"), ("units 3", "slider", 0, 3),
        ("units 2", "slider", 0, 2), ("units 1", "slider", 0, 1)]


def walk(prefetch_on: bool, think_s: float) -> list[tuple[str, float]]:
    """One walk of the page under AppTest in this process (the script as the server runs it, without the
    browser's drawing), every cache cleared first, `think_s` seconds before each move (the prefetch thread works
    meanwhile). Returns (move, seconds of the rerun), the first open first."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from mscompare import profile

    st.cache_data.clear()
    profile.cached_profile.cache_clear()
    real = profile.prefetch
    if not prefetch_on:
        profile.prefetch = lambda *a, **k: None
    try:
        at = AppTest.from_file(str(harness.REPO / "app.py"), default_timeout=120)  # through app.py's navigation
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
    ap = harness.parser(__doc__, out=str(harness.REPO / "docs" / "bench-architectures.txt"), wait_quiet_s=300.0)
    ap.add_argument("--think-s", type=float, default=1.0, help="seconds between slider moves")
    ap.add_argument("--rounds", type=int, default=1, help="prefetch on/off pairs, alternating order")
    a = ap.parse_args()
    os.environ.setdefault("MSCOMPARE_RUNS_DIR", "/tmp/bench-arch-runs")
    import torch

    torch.set_num_threads(1)  # as app.py sets it for the server
    rep = harness.Report(a)
    rep.say(f"page reruns under AppTest, caches cleared before each walk, {a.think_s:.1f} s between moves\n")

    def side(on: bool):
        def run(r: int) -> float:
            moves = walk(on, a.think_s)
            first, moves = moves[0][1], moves[1:]
            slowest = max(t for _, t in moves)
            rep.say(f"round {r + 1} prefetch {'on ' if on else 'off'}: first open {first:.2f} s; moves: "
                    + ", ".join(f"{label} {t:.2f}" for label, t in moves))
            rep.say(f"   slowest move {slowest:.2f} s, mean {sum(t for _, t in moves) / len(moves):.2f} s")
            return slowest
        return run

    worst = harness.alternate(a.rounds, {"on ": side(True), "off": side(False)})
    for mode, w in worst.items():
        rep.say(f"prefetch {mode}: slowest move over rounds {max(w):.2f} s "
                f"(target <= 0.5 s: {'met' if max(w) <= 0.5 else 'NOT met'})")
    rep.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
