"""The thread policy for training: how many intra-op threads a run gets, kept at what measures fastest.

The process that trains owns these settings: a worker process, or the CLI. `auto` starts a run with its share
of the cores (all of them alone, one each for two runs on two cores), then its ThreadTuner keeps whichever
thread count trains fastest beside the other work on the machine. While runs train, the app's page threads run
niced (lower_thread_priority, ui.yield_to_training), and every training marks itself so the app sees it
wherever it was started (training_mark). OpenMP's wait policy stays at libgomp's default in every executor;
OMP_WAIT_POLICY in the environment overrides it. The measurements behind these choices are in
docs/bench-shared-machine.txt and docs/bench-throughput.txt.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

from mscompare.events import Progress
from mscompare.settings import training_marks_dir

PAGE_NICE = 15  # the app's page threads while runs train ($MSCOMPARE_PAGE_NICE; 0 = never lowered)
WINDOW = 2.0  # seconds of training per speed measurement
PROBE_EVERY = 10.0  # seconds before the next try of another thread count (doubled after each losing try)
PROBE_MAX = 80.0
MARGIN = 0.05  # a tried thread count must be this much faster to stay
SLOWDOWN = 0.7  # a window this much slower than the last one at the same count: try another at once
WARMUP_ITERS = 3  # train.WARMUP: iterations left out of a run's images/s


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


GPU_SLOTS = 1  # runs that train on the GPU at the same time (small nets: one saturates the launch queue)


def auto_concurrency() -> int:
    """CPU runs side by side: one per core (docs/bench-throughput.txt, docs/bench-app-throughput.txt), capped
    at 4. GPU runs take a slot too, and also wait for one of the GPU_SLOTS (RunManager)."""
    return max(1, min(cpu_count(), 4))


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


def configure_process(pol: dict, wait_policy_applied: bool | None = None) -> "ThreadTuner":
    """Apply `pol` to this process (call it on the thread that will train); its tuner adapts the thread count.
    `pol`'s wait policy counts as applied if torch loads now, or if the caller says torch loaded under it (a worker
    forked from a forkserver that loaded torch with it)."""
    global _tuner
    early = "torch" not in sys.modules if wait_policy_applied is None else wait_policy_applied
    os.environ.update({k: v for k, v in worker_env(pol, {}).items() if k != "OMP_WAIT_POLICY"})
    import torch

    torch.set_num_threads(pol["threads"])
    _tuner = ThreadTuner({**pol, "wait_policy_applied": early})
    return _tuner


def _busy_ticks() -> tuple[int, int]:
    """(all cores' busy clock ticks outside niced processes, this process's clock ticks) from /proc. Niced
    work (the app's page threads while runs train) yields to a run, so it doesn't count as competition."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user): all but nice, idle, iowait
    busy = sum(v[:8]) - v[1] - v[3] - v[4]
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()
    return busy, int(s[11]) + int(s[12])


class ThreadTuner:
    """The thread count of one training process: every WINDOW seconds the run's own speed is measured (training
    time only: evaluation pauses are left out) together with the cores that other, un-niced processes keep busy.
    Now and then it tries, for one window, one thread more (when those others leave a core free beyond a
    quarter) or one fewer (when they keep half a core busy), and keeps whichever was faster. A probe that loses
    doubles the wait before the next one (PROBE_EVERY up to PROBE_MAX); a window much slower than the last at
    the same count, or a core freed by others, probes at once. `applied` is what the run record shows."""

    def __init__(self, pol: dict):
        self.applied = {**pol, "switches": 0, "min_threads": pol["threads"]}
        self.state: dict = {}

    def record(self) -> dict:
        import torch

        return {**self.applied, "threads_at_end": torch.get_num_threads(), "nice": _nice()}

    def adapt(self, ev: Progress | None = None) -> None:
        """With each progress step, on the training thread: keep the thread count that trains fastest now."""
        if not self.applied.get("adaptive") or not ev or ev.is_eval or not ev.images_per_s:
            return
        timed = ev.iter - WARMUP_ITERS
        if timed <= 0:
            return
        try:
            busy, own = _busy_ticks()
        except (OSError, ValueError, IndexError):  # no /proc: keep the starting thread count
            self.applied["adaptive"] = False
            return
        import torch

        now, clock = time.monotonic(), timed / ev.images_per_s  # training-only time, in units of 1/batch s
        have = torch.get_num_threads()
        w = self.state.get("window")
        if w is None or w["threads"] != have:
            self.state["window"] = {"t": now, "clock": clock, "iter": ev.iter, "busy": busy, "own": own, "threads": have}
            self.state.setdefault("next_probe", now + PROBE_EVERY)
            self.state.setdefault("backoff", PROBE_EVERY)
            return
        if now - w["t"] < WINDOW or clock <= w["clock"]:
            return
        rate = (ev.iter - w["iter"]) / (clock - w["clock"])
        others = max(0.0, (busy - w["busy"]) - (own - w["own"])) / ((now - w["t"]) * os.sysconf("SC_CLK_TCK"))
        self.state["window"] = {"t": now, "clock": clock, "iter": ev.iter, "busy": busy, "own": own, "threads": have}
        rates, probe = self.state.setdefault("rates", {}), self.state.get("probe")
        last_here = rates.get(have)
        rates[have] = rate
        self.applied["others"] = round(others, 2)
        if probe is not None:  # the window we just measured was a probe
            self.state["probe"] = None
            if rate > probe["rate"] * (1 + MARGIN):
                self.state["backoff"] = PROBE_EVERY
                self._note_switch(have)
            else:
                torch.set_num_threads(probe["from"])
                self.state["backoff"] = min(self.state["backoff"] * 2, PROBE_MAX)
            self.state["next_probe"] = now + self.state["backoff"]
            return
        cores = cpu_count()
        room = have < cores and others < cores - have - 0.25  # others leave a core free for one thread more
        if (last_here is not None and rate < SLOWDOWN * last_here) or (room and not self.state.get("room")):
            self.state["next_probe"] = now  # something changed (slower, or another run ended): look again now
        self.state["room"] = room
        if now < self.state["next_probe"]:
            return
        up = have + 1 if room else None
        down = have - 1 if have > 1 and others > 0.5 else None
        target = down if down is not None and (up is None or self.state.get("last_probe") == "up") else up
        if target is None:
            self.state["next_probe"] = now + self.state["backoff"]
            return
        self.state["last_probe"] = "down" if target == down else "up"
        self.state["probe"] = {"from": have, "rate": rate}
        self.applied["probes"] = self.applied.get("probes", 0) + 1
        torch.set_num_threads(target)

    def _note_switch(self, threads: int) -> None:
        self.applied["switches"] += 1
        self.applied["min_threads"] = min(self.applied["min_threads"], threads)
        self.applied["max_threads"] = max(self.applied.get("max_threads", self.applied["threads"]), threads)


_tuner: ThreadTuner | None = None  # this process's, set by configure_process


def adapt(ev: Progress | None = None) -> None:
    """Pass a progress event to this process's tuner, if configure_process set one."""
    if _tuner is not None:
        _tuner.adapt(ev)


def lower_thread_priority(nice: int = 19) -> bool:
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
    return _nice(os.getpid())


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


def _nice(who: int = 0) -> int | None:
    """The nice value of `who` (0: the calling thread), None where the platform has none."""
    try:
        return os.getpriority(os.PRIO_PROCESS, who)
    except (AttributeError, OSError):
        return None


def current_policy() -> dict:
    """What this process runs under, for the run record."""
    if _tuner is not None:
        return _tuner.record()
    return {"threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
            "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "source": os.environ.get("MSCOMPARE_THREAD_SOURCE", "default")}


@contextmanager
def training_mark():
    """Mark this process as one that trains while the block runs: the app's pages look for such marks
    (training_processes) and yield the CPU to them, whichever run store or project the run belongs to.
    A mark is named by its owner (pid and kernel start time), so one left by a killed process is known."""
    from mscompare.runs import owner_id

    marks = training_marks_dir()
    path = marks / f"{owner_id().replace(':', '-')}-{threading.get_native_id()}"
    try:
        marks.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch()
    except OSError:  # a read-only temp folder: the app just won't see this run
        path = None
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def training_processes() -> int:
    """How many trainings on this machine (this user's) are marked now; marks of dead processes are removed."""
    from mscompare.runs import owner_alive

    try:
        marks = list(training_marks_dir().iterdir())
    except OSError:
        return 0
    live = 0
    for m in marks:
        pid, _, rest = m.name.partition("-")
        if pid.isdigit() and owner_alive(f"{pid}:{rest.rsplit('-', 1)[0]}"):
            live += 1
        else:
            try:
                m.unlink(missing_ok=True)
            except OSError:
                pass
    return live
