"""Sweeps as records: listed from any Service on the store, cancelled from there, interrupted when their process died."""
import json

from conftest import digits_npz, wait_for
from mscompare.runs import RunStore
from mscompare.service import Service
from mscompare.sweeps import SweepLog, describe


def test_a_sweep_whose_process_died_reads_interrupted(tmp_path):
    log = SweepLog(RunStore(tmp_path))
    rec = log.create({"models": ["mobilenet"], "datasets": ["mnist"], "widths": [8], "seeds": 1,
                      "preset": "quick"}, total=3, skipped=1, executor="local")
    assert log.get(rec["id"])["state"] == "running"
    path = tmp_path / "sweeps" / f"{rec['id']}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "owner": "999999999:1"}))  # a process long gone
    got = log.list()[0]
    assert got["state"] == "interrupted" and not got["running"] and got["finished"] == 1
    assert "interrupted" in describe(got) and "1 of 3 trials ended" in describe(got)


def test_another_service_lists_the_sweep_cancels_a_run_and_then_the_sweep(tmp_path):
    data = tmp_path / "data"
    digits_npz(data, name="mnist", n_train=200, n_test=50)
    first = Service(tmp_path / "runs", concurrency=1)
    args = (["mobilenet", "alexnet"], ["mnist"], [8], None, 1, "quick", 100_000, str(data))
    sid = first.start_sweep(*args)
    assert first.start_sweep(*args) == sid  # the same request while it runs: the same sweep
    other = Service(tmp_path / "runs", concurrency=1)  # another server (or tab) on the same store
    wait_for(lambda: any(r["status"] == "running" for r in other.store.list(tag=sid)), "a trial to train")
    assert [s["id"] for s in other.sweep_list()] == [sid] and other.sweep_status(sid)["running"]
    running = next(r["id"] for r in other.store.list(tag=sid) if r["status"] == "running")
    other.cancel(running)  # the Runs page's Cancel on a run it doesn't own
    wait_for(lambda: first.manager.snapshot(running).get("status") == "cancelled"
             or first.sweep_status(sid)["counts"].get("cancelled"), "the run to stop")
    assert other.sweep_status(sid)["running"]  # the rest of the sweep goes on
    other.cancel_sweep(sid)
    wait_for(lambda: not other.sweep_status(sid)["running"], "the sweep to stop", timeout=90)
    s = other.sweep_status(sid)
    assert s["state"] == "cancelled" and s["active"] == 0 and s["counts"].get("cancelled") == 1
    assert "(local, cancelled)" in describe(s)


def test_a_cli_sweep_is_listed_and_cancelled_from_the_app(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    data = tmp_path / "data"
    digits_npz(data, name="mnist", n_train=200, n_test=50)
    runs = tmp_path / "runs"
    p = subprocess.Popen([sys.executable, "-m", "mscompare", "sweep", "--models", "mobilenet", "alexnet",
                          "--datasets", "mnist", "--widths", "8", "--iters", "100000", "--data-root", str(data),
                          "--runs-dir", str(runs), "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        app = Service(runs, concurrency=1)
        wait_for(lambda: any(s["active"] for s in app.sweep_list()), "the CLI's sweep to train")
        sweep = app.sweep_list()[0]
        assert sweep["running"] and sweep["total"] == 2 and "2 models × mnist" in describe(sweep)
        app.cancel_sweep(sweep["id"])
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    ended = app.sweep_status(sweep["id"])
    assert ended["state"] == "cancelled" and not ended["running"]
    assert {r["status"] for r in app.store.list(tag=sweep["id"])} <= {"cancelled", "interrupted"}
