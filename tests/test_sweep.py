"""Sweeps on this machine: the CLI's JSON lines, resume, retry of a killed worker, Ctrl-C and signals."""
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import mscompare_cli, wait_for
from mscompare.runs import RunStore
from mscompare.sweep import grid, run_trials

KEYS = {"run_id", "model", "dataset", "width", "units", "seed", "status", "test_acc", "params", "macs", "seconds"}


def sweep_cli(data, runs, *extra):
    return mscompare_cli("sweep", "--models", "mobilenet", "ms_add", "--datasets", "mnist", "--widths", "8", "16",
                         "--iters", "10", "--data-root", data, "--runs-dir", runs, "--workers", "2", *extra)


@pytest.mark.slow
def test_sweep_cli_prints_one_json_line_per_trial_and_resumes(mnist_like, tmp_path):
    p = sweep_cli(mnist_like, tmp_path / "runs", "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert lines[-1] == {"done": 4, "failed": 0, "skipped": 0}
    trials = lines[:-1]
    assert len(trials) == 4 and all(set(t) == KEYS for t in trials)
    assert {(t["model"], t["width"]) for t in trials} == {(m, w) for m in ("mobilenet", "ms_add") for w in (8, 16)}
    assert all(t["status"] == "done" and t["units"] == 2 and t["params"] > 0 for t in trials)
    again = sweep_cli(mnist_like, tmp_path / "runs", "--json")
    assert [json.loads(ln) for ln in again.stdout.splitlines()] == [{"done": 0, "failed": 0, "skipped": 4}]
    missing = sweep_cli(tmp_path / "nowhere", tmp_path / "runs")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def _children(of: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of the live child processes of `of`."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == of:
                out.append((int(d.name), (d / "cmdline").read_bytes()))
        except OSError:
            continue
    return out


def _workers():
    """Live worker processes started by this test process: children of its forkserver."""
    return [pid for server, cmd in _children(os.getpid()) if b"multiprocessing.forkserver" in cmd
            for pid, _ in _children(server)]


@pytest.mark.slow
def test_a_killed_worker_is_retried_once_and_a_repeated_failure_is_recorded(mnist_like, tmp_path):
    store = RunStore(tmp_path / "runs")
    trials = grid(["mobilenet"], ["mnist"], [8], preset_name="quick", iters=100, data_root=str(mnist_like),
                  device="cpu")  # evaluated at 50 and 100
    seen = []
    result = {}
    t = threading.Thread(target=lambda: result.update(run_trials(store, trials, "t", workers=1,
                                                                 on_result=seen.append)))
    t.start()
    # kill the worker once the store shows it trained (its first eval point)
    wait_for(lambda: any(store.curve(r["id"]) for r in store.list(status="running")), "a first eval point", 120)
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


def _slots() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("mscompare-slot-")}


def test_stopping_a_sweep_leaves_a_consistent_store_and_no_threads(mnist_like, tmp_path):
    before = _slots()
    store = RunStore(tmp_path / "runs")
    trials = grid(["mobilenet", "alexnet"], ["mnist"], [8], iters=100000, data_root=str(mnist_like), device="cpu")
    def training() -> bool:  # stop once one trial has trained (its first eval point is in the store)
        return any(store.curve(r["id"]) for r in store.list(status="running"))

    with pytest.raises(KeyboardInterrupt):
        run_trials(store, trials, "t", workers=1, should_stop=training)
    assert {r["status"] for r in store.list()} == {"interrupted"}  # as the README says
    assert not [r for r in store.list() if r["status"] in ("queued", "running")]
    wait_for(lambda: not _slots() - before, "the sweep's worker slots to end", 10)  # a server runs many sweeps


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_background_sweep_cli_stops_cleanly_on_a_signal(mnist_like, tmp_path, sig):
    # `sweep ... &` from a script starts with SIGINT ignored; SIGTERM and SIGINT must still stop it as Ctrl-C does
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mscompare", "sweep", "--models", "mobilenet", "alexnet", "--datasets", "mnist",
           "--widths", "8", "--iters", "100000", "--data-root", str(mnist_like), "--runs-dir", str(runs),
           "--workers", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for(lambda: runs.exists() and any(r["status"] == "running" for r in RunStore(runs).list()),
             "a trial to train", 120)
    p.send_signal(sig)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err
    assert "interrupted; finished runs are kept" in err
    rows = RunStore(runs).list()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"interrupted"}


@pytest.mark.slow
def test_the_bf16_check_tool_runs_both_precisions_resumably_and_reports(mnist_like, tmp_path, monkeypatch, capsys):
    """tools/bf16_check.py's main(), in this process (its sweep trains in worker processes all the same)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bf16_check", Path(__file__).resolve().parents[1] / "tools"
                                                  / "bf16_check.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, "argv", [
        "bf16_check.py", "--models", "mobilenet", "--datasets", "mnist", "--seeds", "2", "--iters", "10",
        "--data-root", str(mnist_like), "--runs-dir", str(tmp_path / "runs"), "--workers", "2",
        "--out", str(tmp_path / "bf16.md")])
    assert tool.main() == 0
    rows = RunStore(tmp_path / "runs").list(tag="bf16-check")
    assert sorted(json.loads(r["env"])["precision"] for r in rows) == ["bf16", "bf16", "fp32", "fp32"]
    table = (tmp_path / "bf16.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| mnist | mobilenet | 10 |")
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[3].endswith(", 2)") and cells[4].endswith(", 2)") and cells[6] in ("below", "within", "above")
    capsys.readouterr()
    assert tool.main() == 0
    assert "0 done, 0 failed, 4 already in the store" in capsys.readouterr().err
