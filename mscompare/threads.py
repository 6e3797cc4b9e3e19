"""The thread policy for training: how many intra-op threads a run gets and how idle OpenMP threads wait.

The process that trains owns these settings and sets them once: a worker process before torch loads
(OpenMP reads OMP_WAIT_POLICY when it starts), the CLI at start-up. bench/shared_machine.py measures
the candidates alone and beside a busy browser; docs/bench-shared-machine.txt has the numbers behind `auto`.
"""
from __future__ import annotations

import os
import sys

# auto: each run gets its share of the cores, and idle OpenMP threads sleep instead of spinning, so a run
# that shares its cores with the app's own browser and server slows down in proportion instead of collapsing.
AUTO_WAIT_POLICY = "PASSIVE"
_applied: dict = {}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_concurrency(device: str = "cpu") -> int:
    """Runs side by side: one per core on CPU (2 single-thread runs beat one 2-thread run 1.33-1.41x on
    2 cores, bench/throughput.py --process-ab), capped at 4; one at a time on a GPU."""
    return 1 if device == "cuda" else max(1, min(cpu_count(), 4))


def policy(threads: int = 0, concurrent: int = 1) -> dict:
    """The policy for one run: `threads` > 0 is the user's own choice, 0 is auto (cores / concurrent runs)."""
    if threads < 0:
        raise ValueError(f"threads must be >= 1 (or 0 for auto), got {threads}")
    n = threads or max(1, cpu_count() // max(1, concurrent))
    return {"threads": n, "wait_policy": os.environ.get("OMP_WAIT_POLICY", AUTO_WAIT_POLICY),
            "source": "user" if threads else "auto"}


def worker_env(pol: dict, base: dict | None = None) -> dict:
    """The environment for a worker process that will train under `pol` (set before torch loads)."""
    env = dict(os.environ if base is None else base)
    env.update(OMP_NUM_THREADS=str(pol["threads"]), MKL_NUM_THREADS=str(pol["threads"]),
               OMP_WAIT_POLICY=pol["wait_policy"], MSCOMPARE_THREAD_SOURCE=pol["source"])
    return env


def configure_process(pol: dict) -> dict:
    """Apply `pol` to this process. The wait policy only takes effect if torch has not loaded yet."""
    early = "torch" not in sys.modules
    os.environ.update(worker_env(pol, {}))
    import torch

    torch.set_num_threads(pol["threads"])
    _applied.clear()
    _applied.update(pol, wait_policy_applied=early)
    return dict(_applied)


def current_policy() -> dict:
    """What this process runs under, for the run record."""
    if _applied:
        return dict(_applied)
    return {"threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
            "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "source": os.environ.get("MSCOMPARE_THREAD_SOURCE", "default")}
