"""Runs never hang or kill the manager: tiny data, crashed or stuck workers, store faults, reused pids, cancel."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import digits_npz, mscompare_cli, wait_for
from mscompare import manager
from mscompare.config import TrainConfig
from mscompare.jobs import execute
from mscompare.manager import RunManager
from mscompare.models import ModelConfig
from mscompare.runs import RunStore, StoreError, owner_id
from mscompare.train import TrainingError, check_trainable

SMALL = ModelConfig(model="mobilenet", width=8, units=2, num_classes=4)


def tcfg(root, **kw):
    return TrainConfig(**{"dataset": "tinydigits", "data_root": str(root), "iters": 20, "batch_size": 32,
                          "eval_every": 10, "device": "cpu", **kw})


def test_fewer_images_than_the_batch_fails_at_once_with_the_counts(tmp_path):
    from mscompare.data import load_dataset

    digits_npz(tmp_path, n_train=20, n_test=10)
    tr, te = load_dataset("tinydigits", tmp_path)
    with pytest.raises(TrainingError, match=r"has 20 images, fewer than the batch size 128.*at most 20"):
        check_trainable(TrainConfig(), tr, te)
    store = RunStore(tmp_path / "runs")
    t = time.time()
    row = execute(store, store.create(SMALL, tcfg(tmp_path, batch_size=128)))
    assert row["status"] == "failed" and "batch size 128" in row["message"] and time.time() - t < 30


@pytest.mark.parametrize("bad, words", [(dict(iters=0), "iterations"), (dict(batch_size=0), "batch size"),
                                        (dict(lr=float("nan")), "learning rate"), (dict(lr=-1), "learning rate"),
                                        (dict(threads=-2), "threads"), (dict(device="tpu"), "device")])
def test_train_config_rejects_bad_values(bad, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**bad)


def test_nan_loss_names_zero_variance_data(tmp_path):
    import numpy as np

    d = tmp_path / "flat"
    d.mkdir()
    for split in ("train", "test"):
        np.savez(d / f"{split}.npz", x=np.full((64, 28, 28, 1), 7, np.uint8), y=np.arange(64) % 4)
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    row = execute(store, store.create(SMALL, tcfg(tmp_path, dataset="flat")))
    assert row["status"] == "failed"
    assert "zero variance" in row["message"]
    nan = execute(store, store.create(SMALL, tcfg(tmp_path, lr=1e9, optimizer="sgd", iters=50)))
    assert nan["status"] == "failed" and "loss became" in nan["message"]
    assert "learning rate" in nan["message"] and "zero variance" in nan["message"]


def test_manager_runs_side_by_side_and_a_crash_or_a_failure_spares_the_others(tmp_path, monkeypatch):
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=2)
    long = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
    doomed = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
    wait_for(lambda: mgr.snapshot(long).get("iter", 0) >= 10 and mgr.snapshot(doomed).get("iter", 0) >= 10)
    assert {mgr.snapshot(r)["status"] for r in (long, doomed)} == {"running"}  # two at once
    assert {"eta", "images_per_s", "loss"} <= set(mgr.snapshot(long))  # live progress for the page
    os.kill(mgr._procs[doomed].pid, signal.SIGKILL)  # the worker dies (out-of-memory killer, segfault...)
    wait_for(lambda: mgr.snapshot(doomed)["status"] == "failed")
    assert "worker process died" in store.get(doomed)["message"]
    bad = mgr.add(SMALL, tcfg(tmp_path, dataset="nope"))  # a failing run while `long` keeps going
    ok = mgr.add(SMALL, tcfg(tmp_path))
    wait_for(lambda: mgr.snapshot(ok).get("status") == "done", "the run to finish", 120)
    assert store.get(bad)["status"] == "failed" and "nope" in store.get(bad)["message"]
    assert mgr.snapshot(long)["status"] == "running"
    mgr.cancel(long)
    assert mgr.wait(timeout=60)
    assert store.get(long)["status"] == "cancelled"
    assert [p["iter"] for p in store.curve(ok)] == [10, 20]
    env = json.loads(store.get(ok)["env"])
    assert env["thread_policy"]["threads"] >= 1 and env["thread_policy"]["source"] == "auto"


def test_cancel_works_on_queued_and_stuck_runs(tmp_path, monkeypatch):
    digits_npz(tmp_path)
    monkeypatch.setattr(manager, "KILL_AFTER", 1.0)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    stuck = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
    queued = mgr.add(SMALL, tcfg(tmp_path))
    wait_for(lambda: mgr.snapshot(stuck).get("iter", 0) >= 10)
    mgr.cancel(queued)
    assert store.get(queued)["status"] == "cancelled"
    os.kill(mgr._procs[stuck].pid, signal.SIGSTOP)  # a worker that no longer answers (hung I/O, a deadlock)
    mgr.cancel(stuck)  # SIGTERM stays pending; the worker is killed after KILL_AFTER
    assert mgr.wait(timeout=30)
    assert store.get(stuck)["status"] == "cancelled"
    orphan = store.create(SMALL, tcfg(tmp_path))  # 'queued' in the store, but no worker of ours has it
    mgr.cancel(orphan)
    assert store.get(orphan)["status"] == "cancelled"


def test_a_run_cancelled_while_its_slot_starts_its_worker_ends_cancelled(tmp_path, monkeypatch):
    """The slot has taken the run (live: running) but its worker does not exist yet when the cancel comes: the
    worker is stopped as soon as it exists, and the run ends cancelled, not left running by the start."""
    import threading

    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    taken, go, returned = threading.Event(), threading.Event(), threading.Event()
    start_worker = RunManager._run_in_worker

    def held(self, rids, fuse):
        taken.set()
        go.wait(30)
        try:
            return start_worker(self, rids, fuse)
        finally:
            returned.set()

    monkeypatch.setattr(RunManager, "_run_in_worker", held)
    rid = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
    assert taken.wait(30) and mgr.snapshot(rid)["status"] == "running"
    mgr.cancel(rid)
    go.set()
    assert mgr.wait(timeout=60)
    assert returned.is_set()  # wait() ends when the slot is done with the run, so a CLI may exit then
    assert store.get(rid)["status"] == "cancelled" and mgr.snapshot(rid)["status"] == "cancelled"
    assert [e.status for e in mgr.ended()] == ["cancelled"]


def test_a_store_write_failure_fails_the_run_with_a_message(tmp_path, monkeypatch):
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    rid = store.create(SMALL, tcfg(tmp_path))
    real = store.add_point

    def full(*a):
        raise StoreError(f"can't write the run store {store.path}: database or disk is full")

    monkeypatch.setattr(store, "add_point", full)
    row = execute(store, rid)
    assert row["status"] == "failed" and "disk is full" in row["message"]
    monkeypatch.setattr(store, "add_point", real)
    assert execute(store, store.create(SMALL, tcfg(tmp_path)))["status"] == "done"


def test_an_unwritable_runs_folder_is_one_line_in_the_cli(tmp_path):
    digits_npz(tmp_path)
    (tmp_path / "afile").write_text("a file where the runs folder should go")
    p = mscompare_cli("train", "--model", "alexnet", "--dataset", "tinydigits", "--data-root", tmp_path, "--iters",
                      "5", "--runs-dir", tmp_path / "afile" / "runs")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "can't create the runs folder" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_sqlite_write_errors_become_store_errors(tmp_path, monkeypatch):
    store = RunStore(tmp_path)

    def readonly(self):
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        return db

    monkeypatch.setattr(RunStore, "_connect", readonly)
    with pytest.raises(StoreError, match="can't write the run store .*read-only"):
        store.create(SMALL, TrainConfig())


def test_a_corrupt_run_store_says_what_it_is_and_how_to_move_it(tmp_path):
    (tmp_path / "runs.sqlite").write_text("this is not a database, it is a note " * 100)
    with pytest.raises(StoreError, match=r"not a readable SQLite run store.*Move it aside \(mv "):
        RunStore(tmp_path)
    p = mscompare_cli("runs", "--runs-dir", tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "Move it aside" in p.stderr


def test_a_reused_pid_does_not_keep_a_dead_run_running(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create(SMALL, TrainConfig())
    pid = os.getpid()  # alive, but not the process that started the run: its start time differs
    store.update(rid, status="running", pid=pid, owner=f"{pid}:1")
    mine = store.create(SMALL, TrainConfig())
    store.update(mine, status="running", owner=owner_id())
    assert RunStore(tmp_path).recover() == 0  # the constructor already recovered it
    assert store.get(rid)["status"] == "interrupted" and store.get(mine)["status"] == "running"


def test_cli_argument_errors_are_one_line(tmp_path):
    cli = mscompare_cli

    for args, words in ((["info", "--width", "100000"], "width must be"),
                        (["runs", "export", "--csv", str(tmp_path / "no" / "x.csv"), "--runs-dir", str(tmp_path)],
                         "does not exist"),
                        (["train", "--model", "alexnet", "--dataset", "mnist", "--lr", "nan"], "learning rate")):
        p = cli(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr and words in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_a_bad_label_fails_its_run_and_the_manager_trains_the_next(tmp_path):
    import numpy as np

    digits_npz(tmp_path)
    bad = tmp_path / "badlabels"
    bad.mkdir()
    x = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1), dtype=np.uint8)
    np.savez(bad / "train.npz", x=x, y=np.r_[np.arange(63) % 4, 99])  # labels are checked before any device
    np.savez(bad / "test.npz", x=x[:8], y=np.arange(8) % 4)
    (bad / "classes.txt").write_text("a\nb\nc\nd\n")
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    r_bad, r_ok = mgr.add(SMALL, tcfg(tmp_path, dataset="badlabels")), mgr.add(SMALL, tcfg(tmp_path))
    assert mgr.wait(timeout=120)
    assert store.get(r_bad)["status"] == "failed" and "99" in store.get(r_bad)["message"]
    assert store.get(r_ok)["status"] == "done"


def test_an_old_store_gains_the_new_columns_and_many_processes_can_open_it_at_once(tmp_path):
    old = sqlite3.connect(tmp_path / "runs.sqlite")
    old.executescript("CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL, started REAL, finished REAL, status TEXT,"
                      " message TEXT, model TEXT, dataset TEXT, preset TEXT, seed INTEGER, iters INTEGER, tag TEXT,"
                      " model_config TEXT, train_config TEXT, env TEXT, pid INTEGER, test_acc REAL, params INTEGER,"
                      " macs INTEGER, seconds REAL, images_per_s REAL, checkpoint TEXT);"
                      "INSERT INTO runs (id, status, model) VALUES ('old-run', 'done', 'alexnet');")
    old.commit()
    old.close()
    code = f"from mscompare.runs import RunStore; RunStore({str(tmp_path)!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
    row = RunStore(tmp_path).get("old-run")
    assert row["status"] == "done" and "owner" in row and "batch" in row


def test_cli_skips_bad_files_and_resizes_image_folders_when_asked(tmp_path):
    from PIL import Image

    for split, n in (("train", 40), ("test", 8)):
        for c in ("a", "b"):
            d = tmp_path / "pics" / split / c
            d.mkdir(parents=True)
            for i in range(n // 2):
                Image.new("L", (30 if i % 2 else 28, 28 if i % 2 else 30), 200 if c == "a" else 30).save(d / f"{i}.png")
    (tmp_path / "pics" / "train" / "a" / "broken.png").write_bytes(b"not a png")
    args = ["train", "--model", "mobilenet", "--dataset", "pics", "--data-root", str(tmp_path), "--iters", "3",
            "--batch-size", "8", "--width", "8", "--eval-every", "3", "--runs-dir", str(tmp_path / "runs"), "--json"]
    run = lambda *extra: mscompare_cli(*args, *extra)  # noqa: E731
    p = run()
    assert p.returncode == 1 and "Traceback" not in p.stderr and "broken.png" in p.stderr and "--skip-bad" in p.stderr
    p = run("--skip-bad")
    assert p.returncode == 1 and "--image-size" in p.stderr and "Traceback" not in p.stderr  # mixed sizes listed
    p = run("--skip-bad", "--image-size", "28")
    assert p.returncode == 0, p.stderr
    assert "skipped 1 bad file" in p.stderr and json.loads(p.stdout.splitlines()[-1])["test_acc"] >= 0


def test_a_store_that_fails_while_the_app_trains_fails_that_run_and_stops_its_worker(tmp_path, monkeypatch):
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)

    def full(*a):
        raise StoreError(f"can't write the run store {store.path}: database or disk is full")

    monkeypatch.setattr(store, "add_point", full)
    rid = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
    assert mgr.wait(timeout=60)
    assert mgr.snapshot(rid)["status"] == "failed" and "disk is full" in mgr.snapshot(rid)["message"]
    assert not mgr._procs  # the worker was stopped, not left training
    monkeypatch.undo()
    ok = mgr.add(SMALL, tcfg(tmp_path))
    assert mgr.wait(timeout=60) and store.get(ok)["status"] == "done"


def test_a_page_thread_at_lowered_priority_still_starts_runs_at_the_servers_priority(tmp_path):
    """The app lowers its page threads while runs train (threads.lower_thread_priority); a worker started on
    a lowered page's request must not inherit that: slot threads exist before any page lowers itself."""
    import threading

    from mscompare.threads import lower_thread_priority, process_nice

    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)  # created by an unlowered thread, as ui.service() is
    out = {}

    def page():
        assert lower_thread_priority(10)
        mgr.set_concurrency(3)  # the "Runs side by side" box
        out["ids"] = mgr.add_many([(SMALL, tcfg(tmp_path)), (SMALL, tcfg(tmp_path, seed=1))])

    t = threading.Thread(target=page)
    t.start()
    t.join()
    assert mgr.wait(timeout=120)
    assert len(mgr._threads) >= 3
    assert {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in mgr._threads} == {process_nice()}
    for rid in out["ids"]:
        row = store.get(rid)
        assert row["status"] == "done", row["message"]
        assert json.loads(row["env"])["thread_policy"]["nice"] == process_nice()


def test_a_batch_queues_its_longest_runs_first(tmp_path, monkeypatch):
    """Side by side, the batch ends with a short run rather than a long one alone on the machine."""
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    mgr.set_concurrency(1)
    monkeypatch.setattr(mgr, "_q", manager.queue.Queue())
    order = []
    monkeypatch.setattr(mgr._q, "put", order.append)
    cfgs = [ModelConfig(model=m, width=w, units=2, num_classes=4) for m, w in
            (("mobilenet", 8), ("alexnet", 64), ("googlenet", 32))]
    ids = mgr.add_many([(c, tcfg(tmp_path)) for c in cfgs])
    macs = {r["id"]: r["macs"] for r in store.list(ids=ids)}
    queued = [rid for _fuse, group in order for rid in group]
    assert queued == sorted(ids, key=lambda r: -macs[r]) and queued != ids  # ids stay in the given order


def test_seeds_are_grouped_in_one_worker_only_when_fusing(tmp_path, monkeypatch):
    """fuse=on puts a model's seeds in one queue item (one worker, one slot); auto on a CPU and off keep them
    apart, so they train side by side."""
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    monkeypatch.setattr(mgr, "_q", manager.queue.Queue())
    items = []
    monkeypatch.setattr(mgr._q, "put", items.append)
    runs = [(SMALL, tcfg(tmp_path, seed=s)) for s in range(3)]
    mgr.add_many(runs, fuse="on")
    mgr.add_many(runs, fuse="auto")
    mgr.add_many(runs, fuse="off")
    assert [len(group) for _, group in items] == [3, 1, 1, 1, 1, 1, 1]


def test_cancelling_one_run_of_a_fused_group_leaves_the_other_training(tmp_path):
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    a, b = mgr.add_many([(SMALL, tcfg(tmp_path, iters=100000, seed=s)) for s in range(2)], fuse="on")
    wait_for(lambda: mgr.snapshot(a).get("iter", 0) >= 10 and mgr.snapshot(b).get("iter", 0) >= 10)
    mgr.cancel(a)
    wait_for(lambda: mgr.snapshot(a)["status"] == "cancelled")
    at = mgr.snapshot(b)["iter"]
    wait_for(lambda: mgr.snapshot(b)["iter"] >= at + 20)  # b keeps training in the same worker
    assert mgr.snapshot(b)["status"] == "running" and store.get(a)["status"] == "cancelled"
    mgr.cancel(b)
    wait_for(lambda: mgr.snapshot(b)["status"] == "cancelled")
    assert not mgr.active()


def test_gpu_runs_train_one_at_a_time_while_cpu_slots_stay_open(tmp_path, monkeypatch):
    """Two slots, two runs the manager sees as GPU runs: the second starts only after the first has ended."""
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    monkeypatch.setattr(RunManager, "_on_gpu", lambda self, rid: True)
    mgr = RunManager(store, concurrency=2)
    a, b = mgr.add_many([(SMALL, tcfg(tmp_path)), (SMALL, tcfg(tmp_path, seed=1))])
    assert mgr.wait(timeout=120)
    first, second = sorted((store.get(r) for r in (a, b)), key=lambda r: r["started"])
    assert first["status"] == second["status"] == "done"
    assert second["started"] >= first["finished"]
