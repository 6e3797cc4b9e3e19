"""Owns the worker-start benchmark: what a training worker costs before its first step, as a fresh interpreter that
imports what a worker needs (worker.PRELOAD) against a fork from the forkserver that has it imported."""
from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

from bench import harness


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fresh_interpreter(_round: int) -> tuple[float, float]:
    """(wall s, CPU s) of `python -c "import <PRELOAD>"`: what each worker paid at its start without the forkserver."""
    from mscompare.worker import PRELOAD

    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(PRELOAD)], check=True)
    return time.perf_counter() - t0, _children_cpu() - c0


def _send_cpu(conn) -> None:
    conn.send(time.process_time())  # a forked child's CPU time counts from its fork


def forked(_round: int) -> tuple[float, float]:
    """(wall s, CPU s of the child) of a process forked from the forkserver, from start() to its end."""
    from mscompare.manager import forkserver

    ctx = forkserver()
    r, w = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    p = ctx.Process(target=_send_cpu, args=(w,))
    p.start()
    w.close()
    cpu = r.recv()
    p.join()
    return time.perf_counter() - t0, cpu


def main() -> int:
    ap = harness.parser(__doc__, out=str(harness.REPO / "docs" / "bench-worker-start.txt"))
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rep = harness.Report(a)
    t0 = time.perf_counter()
    forked(0)
    rep.say(f"the forkserver's own start (imports PRELOAD once per app or CLI process), with its first fork: "
            f"{time.perf_counter() - t0:.2f} s wall\n")
    got = harness.alternate(a.rounds, {"fresh interpreter": fresh_interpreter, "fork from the forkserver": forked})
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in got.items()}
    for k, (wall, cpu) in med.items():
        rep.say(f"{k:>26}: median {wall * 1000:8.1f} ms wall, {cpu * 1000:8.1f} ms CPU over {a.rounds} rounds")
    (fw, fc), (kw, kc) = med["fresh interpreter"], med["fork from the forkserver"]
    rep.say(f"\nper worker, the fork costs 1/{fw / kw:.0f} of the wall time and 1/{fc / max(kc, 1e-4):.0f} of the CPU "
            "time of a fresh interpreter's imports")
    rep.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
