"""Sweeps: the CLI's JSON lines, resume, retry of a killed worker, Ctrl-C, and a four-trial sweep on a local Ray."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import digits_npz
from mscompare.runs import RunStore
from mscompare.sweep import grid, run_trials

KEYS = {"run_id", "model", "dataset", "width", "units", "seed", "status", "test_acc", "params", "macs", "seconds"}


@pytest.fixture
def data(tmp_path):
    digits_npz(tmp_path / "data", name="mnist", n_train=300, n_test=100)  # mnist-shaped, quick to learn
    return tmp_path / "data"


def sweep_cli(data, runs, *extra):
    return subprocess.run([sys.executable, "-m", "mscompare", "sweep", "--models", "mobilenet", "ms_add",
                           "--datasets", "mnist", "--widths", "8", "16", "--iters", "10", "--data-root", str(data),
                           "--runs-dir", str(runs), "--workers", "2", *extra],
                          capture_output=True, text=True, timeout=300)


def test_sweep_cli_prints_one_json_line_per_trial_and_resumes(data, tmp_path):
    p = sweep_cli(data, tmp_path / "runs", "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert lines[-1] == {"done": 4, "failed": 0, "skipped": 0}
    trials = lines[:-1]
    assert len(trials) == 4 and all(set(t) == KEYS for t in trials)
    assert {(t["model"], t["width"]) for t in trials} == {(m, w) for m in ("mobilenet", "ms_add") for w in (8, 16)}
    assert all(t["status"] == "done" and t["units"] == 2 and t["params"] > 0 for t in trials)
    again = sweep_cli(data, tmp_path / "runs", "--json")
    assert [json.loads(ln) for ln in again.stdout.splitlines()] == [{"done": 0, "failed": 0, "skipped": 4}]
    missing = sweep_cli(tmp_path / "nowhere", tmp_path / "runs")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def _workers():
    """Live worker processes started by this test process."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"mscompare.worker" in (d / "cmdline").read_bytes():
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    out.append(int(d.name))
        except OSError:
            continue
    return out


def test_a_killed_worker_is_retried_once_and_a_repeated_failure_is_recorded(data, tmp_path):
    store = RunStore(tmp_path / "runs")
    trials = grid(["mobilenet"], ["mnist"], [8], iters=200, data_root=str(data), device="cpu")
    seen = []
    result = {}
    t = threading.Thread(target=lambda: result.update(run_trials(store, trials, "t", workers=1,
                                                                 on_result=seen.append)))
    t.start()
    deadline = time.time() + 120  # kill the worker once the store shows it trained (its first eval point)
    while not any(store.curve(r["id"]) for r in store.list(status="running")) and time.time() < deadline:
        time.sleep(0.05)
    first = _workers()[0]
    os.kill(first, signal.SIGKILL)
    t.join(timeout=180)
    assert result["done"] == 1 and result["failed"] == 0 and seen[0]["status"] == "done"
    rows = store.list()
    assert sorted(r["status"] for r in rows) == ["done", "failed"]
    assert "retried: the worker process died" in [r for r in rows if r["status"] == "failed"][0]["message"]
    # a trial that fails every time is tried twice, then recorded as failed
    bad = grid(["mobilenet"], ["mnist"], [8], iters=5, data_root=str(tmp_path / "empty"), device="cpu")
    (tmp_path / "empty").mkdir()
    out = run_trials(store, bad, "t", workers=1)
    assert out["failed"] == 1 and len(store.list(tag="t", status="failed")) == 3


def test_stopping_a_sweep_leaves_a_consistent_store(data, tmp_path):
    store = RunStore(tmp_path / "runs")
    trials = grid(["mobilenet", "alexnet"], ["mnist"], [8], iters=100000, data_root=str(data), device="cpu")
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_trials(store, trials, "t", workers=1, should_stop=lambda: time.time() - started > 8)
    assert {r["status"] for r in store.list()} == {"interrupted"}  # as the README says
    assert not [r for r in store.list() if r["status"] in ("queued", "running")]


@pytest.mark.ray
def test_a_four_trial_sweep_on_a_local_ray_cluster(data, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store = RunStore(tmp_path / "runs")
        trials = grid(["mobilenet", "ms_add"], ["mnist"], [8, 16], iters=10, data_root=str(data), device="cpu")
        seen = []
        out = run_trials(store, trials, "ray", executor="ray", on_result=seen.append)
        assert (out["done"], out["failed"], out["skipped"]) == (4, 0, 0) and len(seen) == 4
        for rid in out["ids"]:
            row = store.get(rid)
            assert row["status"] == "done" and [p["iter"] for p in store.curve(rid)] == [10]
            assert Path(row["checkpoint"]).is_file() and Path(row["checkpoint"]).parent == store.dir / "checkpoints"
        assert run_trials(store, trials, "ray", executor="ray")["skipped"] == 4
    finally:
        ray.shutdown()


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
def test_a_killed_ray_worker_is_retried_once_and_then_recorded(data, tmp_path, kills, status):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_ray_attempts, args=(kills, stop, killed), daemon=True)
    killer.start()
    try:
        store = RunStore(tmp_path / "runs")
        trials = grid(["mobilenet"], ["mnist"], [8], iters=300, data_root=str(data), device="cpu")
        out = run_trials(store, trials, "ray", executor="ray")
        stop.set()
        assert len(killed) == kills
        row = store.get(out["ids"][0])
        assert row["status"] == status and (out["done"], out["failed"]) == ((1, 0) if status == "done" else (0, 1))
        if status == "failed":
            assert row["message"].startswith("failed after a retry") and "died" in row["message"].lower()
        else:
            assert [p["iter"] for p in store.curve(row["id"])][-1] == 300
    finally:
        stop.set()
        ray.shutdown()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_background_sweep_cli_stops_cleanly_on_a_signal(data, tmp_path, sig):
    # `sweep ... &` from a script starts with SIGINT ignored; SIGTERM and SIGINT must still stop it as Ctrl-C does
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mscompare", "sweep", "--models", "mobilenet", "alexnet", "--datasets", "mnist",
           "--widths", "8", "--iters", "100000", "--data-root", str(data), "--runs-dir", str(runs), "--workers", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and not (runs.exists() and any(r["status"] == "running"
                                                                 for r in RunStore(runs).list())):
        time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err
    assert "interrupted; finished runs are kept" in err
    rows = RunStore(runs).list()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"interrupted"}


def test_the_bf16_check_tool_runs_both_precisions_resumably_and_reports(data, tmp_path):
    tool = Path(__file__).resolve().parents[1] / "tools" / "bf16_check.py"
    cmd = [sys.executable, str(tool), "--models", "mobilenet", "--datasets", "mnist", "--seeds", "2", "--iters", "10",
           "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"), "--workers", "2",
           "--out", str(tmp_path / "bf16.md")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = RunStore(tmp_path / "runs").list(tag="bf16-check")
    assert sorted(json.loads(r["env"])["precision"] for r in rows) == ["bf16", "bf16", "fp32", "fp32"]
    table = (tmp_path / "bf16.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| mnist | mobilenet | 10 |")
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[3].endswith(", 2)") and cells[4].endswith(", 2)") and cells[6] in ("below", "within", "above")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "0 done, 0 failed, 4 already in the store" in again.stderr
