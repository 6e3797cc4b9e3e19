"""The thread policy for training: how many intra-op threads a run gets, adapted to what else keeps the cores busy.

The process that trains owns these settings: a worker process, or the CLI. `auto` starts a run with its share
of the cores (all of them alone, one each for two runs on two cores) and then follows the machine: every
couple of seconds, on the training thread, it measures how many cores other processes keep busy and trains
with the cores left (at least one). Two spinning threads on cores that a browser also wants collapse (12.8x
slower); one thread beside it loses only its fair share. OpenMP's wait policy is left at libgomp's default,
which was fastest alone; OMP_WAIT_POLICY in the environment overrides it. bench/shared_machine.py measures the
candidates alone and beside a busy browser (docs/bench-shared-machine.txt): googlenet on CIFAR-10, auto gave
1546 img/s alone (0.96x the best policy) and 583 beside 4 browser sessions (the best of all five; 2 fixed
threads gave 267).
"""
from __future__ import annotations

import os
import sys
import threading
import time

ADAPT_EVERY = 2.0  # seconds between looks at the machine
_applied: dict = {}
_state: dict = {}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_concurrency(device: str = "cpu") -> int:
    """Runs side by side: one per core on CPU (2 single-thread runs beat one 2-thread run 1.33-1.43x on
    2 cores: bench/throughput.py --process-ab, bench/app_throughput.py), capped at 4; one at a time on a GPU."""
    return 1 if device == "cuda" else max(1, min(cpu_count(), 4))


def policy(threads: int = 0, concurrent: int = 1) -> dict:
    """The policy for one run: `threads` > 0 is the user's fixed choice; 0 is auto (cores / concurrent runs
    to start with, then adapted to the machine's load)."""
    if threads < 0:
        raise ValueError(f"threads must be >= 1 (or 0 for auto), got {threads}")
    n = threads or max(1, cpu_count() // max(1, concurrent))
    return {"threads": n, "wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default",
            "source": "user" if threads else "auto", "adaptive": not threads}


def worker_env(pol: dict, base: dict | None = None) -> dict:
    """The environment for a worker process that will train under `pol` (set before torch loads)."""
    env = dict(os.environ if base is None else base)
    env.update(OMP_NUM_THREADS=str(pol["threads"]), MKL_NUM_THREADS=str(pol["threads"]),
               MSCOMPARE_THREAD_SOURCE=pol["source"])
    if pol["wait_policy"] != "default":
        env["OMP_WAIT_POLICY"] = pol["wait_policy"]
    return env


def configure_process(pol: dict) -> dict:
    """Apply `pol` to this process (call it on the thread that will train)."""
    early = "torch" not in sys.modules
    os.environ.update({k: v for k, v in worker_env(pol, {}).items() if k != "OMP_WAIT_POLICY"})
    import torch

    torch.set_num_threads(pol["threads"])
    _applied.clear()
    _applied.update(pol, wait_policy_applied=early, switches=0, min_threads=pol["threads"])
    _state.clear()
    return dict(_applied)


def _busy_ticks() -> tuple[int, int]:
    """(all cores' busy clock ticks, this process's clock ticks) from /proc."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # everything but idle and iowait
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()
    return busy, int(s[11]) + int(s[12])


def adapt() -> None:
    """On the training thread, every ADAPT_EVERY seconds: train with the cores other processes leave free, down
    to one thread when they are busy and back up to every core when a run is left alone (a run that started
    beside another gets the whole machine once the other finishes). Going up needs a clear margin, so that a
    load near a core's edge doesn't flip the thread count every look."""
    if not _applied.get("adaptive"):
        return
    now = time.monotonic()
    try:
        busy, own = _busy_ticks()
    except (OSError, ValueError, IndexError):  # no /proc: keep the starting thread count
        _applied["adaptive"] = False
        return
    last = _state.get("last")
    _state["last"] = (now, busy, own)
    if last is None or now - last[0] < ADAPT_EVERY:
        if last is not None:
            _state["last"] = last
        return
    ticks = (now - last[0]) * os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy - last[1]) - (own - last[2])) / ticks  # cores kept busy by other processes
    import torch

    have = torch.get_num_threads()
    want = next_threads(have, cpu_count() - others, cpu_count())
    if want != have:
        torch.set_num_threads(want)
        _applied["switches"] += 1
        _applied["min_threads"] = min(_applied["min_threads"], want)
        _applied["max_threads"] = max(_applied.get("max_threads", _applied["threads"]), want)


def next_threads(have: int, free: float, cores: int) -> int:
    """Threads for the next interval, given the cores other processes leave `free`: fewer as soon as fewer
    than `have` - 0.5 cores are free, more only when at least 0.75 of a core is free beyond them."""
    if free < have - 0.5:
        return max(1, round(free))
    if free >= have + 0.75:
        return min(cores, int(free + 0.25))
    return have


def lower_thread_priority(nice: int = 10) -> bool:
    """Run the calling thread (only it: Linux keeps a nice value per thread) at a lower priority, so that
    training processes keep their cores while it works. For the app's page threads while runs train; a thread
    started from a lowered one inherits its priority, so runs are never started from one. False where the
    platform can't."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
        return True
    except (AttributeError, OSError):
        return False


def process_nice() -> int | None:
    """The nice value of this process's main thread: what its worker processes should train at."""
    try:
        return os.getpriority(os.PRIO_PROCESS, os.getpid())
    except (AttributeError, OSError):
        return None


def restore_nice(nice: int | None) -> None:
    """In a worker: undo a priority lowered by the thread that started it, where the system allows (an
    unprivileged process may only lower its own priority; the run record shows the nice value it trained at)."""
    if nice is None:
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError):
        pass


def _nice() -> int | None:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return None


def current_policy() -> dict:
    """What this process runs under, for the run record."""
    if _applied:
        import torch

        return {**_applied, "threads_at_end": torch.get_num_threads(), "nice": _nice()}
    return {"threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
            "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "source": os.environ.get("MSCOMPARE_THREAD_SOURCE", "default")}
