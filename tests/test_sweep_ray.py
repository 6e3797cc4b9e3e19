"""Sweeps on a local Ray cluster: four trials, and a killed Ray worker retried once (a new run), then recorded."""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mscompare.runs import RunStore
from mscompare.sweep import grid, run_trials

pytestmark = pytest.mark.xdist_group("ray")  # one worker builds the module-scoped fixture


@pytest.fixture(scope="module")
def ray():
    """One local Ray cluster (2 CPUs) for this module's tests (starting one takes seconds); each test has its
    own run store."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_a_four_trial_sweep_on_a_local_ray_cluster(ray, mnist_like, tmp_path):
    store = RunStore(tmp_path / "runs")
    trials = grid(["mobilenet", "ms_add"], ["mnist"], [8, 16], iters=10, data_root=str(mnist_like), device="cpu")
    seen = []
    out = run_trials(store, trials, "ray", executor="ray", on_result=seen.append)
    assert (out["done"], out["failed"], out["skipped"]) == (4, 0, 0) and len(seen) == 4
    for rid in out["ids"]:
        row = store.get(rid)
        assert row["status"] == "done" and [p["iter"] for p in store.curve(rid)] == [10]
        assert Path(row["checkpoint"]).is_file() and Path(row["checkpoint"]).parent == store.dir / "checkpoints"
    assert run_trials(store, trials, "ray", executor="ray")["skipped"] == 4


def _parent(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _ray_trial_pids() -> list[int]:
    """This test's Ray worker processes executing a trial now (Ray titles a busy worker `ray::<task function>`;
    the local cluster's processes descend from this one, so another test's cluster is left alone)."""
    out = subprocess.run(["pgrep", "-f", "^ray::_ray_trial"], capture_output=True, text=True)
    mine = []
    for pid in map(int, out.stdout.split()):
        p = pid
        while p > 1 and p != os.getpid():
            p = _parent(p)
        if p == os.getpid():
            mine.append(pid)
    return mine


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (utime + stime from /proc), 0 once it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_ray_attempts(n: int, stop: threading.Event, killed: list) -> None:
    """SIGKILL the worker of each of the next `n` trial attempts once it has run the trial for a CPU second."""
    while len(killed) < n and not stop.is_set():
        pids = [p for p in _ray_trial_pids() if p not in killed and _cpu_seconds(p) >= 1.0]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.05)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("kills, status", [(1, "done"), (2, "failed")])
def test_a_killed_ray_worker_is_retried_once_and_then_recorded(ray, mnist_like, tmp_path, kills, status):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_ray_attempts, args=(kills, stop, killed), daemon=True)
    killer.start()
    try:
        store = RunStore(tmp_path / "runs")
        trials = grid(["mobilenet"], ["mnist"], [8], iters=300, data_root=str(mnist_like), device="cpu")
        out = run_trials(store, trials, "ray", executor="ray")
        stop.set()
        assert len(killed) == kills
        row = store.get(out["ids"][0])
        assert row["status"] == status and (out["done"], out["failed"]) == ((1, 0) if status == "done" else (0, 1))
        tries = sorted(store.list(), key=lambda r: r["created"])  # each try is its own run, as on local workers
        assert len(tries) == 2 and tries[-1]["id"] == row["id"]
        assert tries[0]["status"] == "failed" and tries[0]["message"].startswith("retried: ")
        assert all("died" in r["message"].lower() for r in tries if r["status"] == "failed")
        if status == "done":
            assert [p["iter"] for p in store.curve(row["id"])][-1] == 300
    finally:
        stop.set()
