"""The auto thread policy: its share of the cores to start with, then fewer threads while others keep cores busy."""
import pytest
import torch

from mscompare import threads
from mscompare.events import Progress


def simulate(monkeypatch, threads_fn, speed, others, seconds, concurrent=1):
    """Drive adapt() with the progress events of a simulated run: `speed(threads, t)` iterations/s of
    training, `others(t)` cores kept busy by other un-niced processes, an event every 10 iterations and an
    evaluation pause (not training time) every 100. Returns the thread count over time."""
    clock = {"t": 0.0}
    ticks = {"busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "WARMUP_ITERS", 0)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(threads, "_busy_ticks", lambda: (int(ticks["busy"]), int(ticks["own"])))
    threads.configure_process(threads.policy(0, concurrent=concurrent))
    it, train_time, seen = 0, 0.0, []
    while clock["t"] < seconds:
        n = torch.get_num_threads()
        dt = 10 / speed(n, clock["t"])
        ticks["own"] += min(n, 2) * 100 * dt
        ticks["busy"] += (min(n, 2) + others(clock["t"])) * 100 * dt
        clock["t"] += dt
        it, train_time = it + 10, train_time + dt
        threads_fn(Progress(it, 10**6, 1.0, it * 128 / train_time, clock["t"], 0.0))
        if it % 100 == 0:
            clock["t"] += 0.5  # an evaluation: wall time that is not training time
        seen.append((clock["t"], torch.get_num_threads()))
    return seen


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_alone_a_run_keeps_every_core_and_never_probes(monkeypatch, keep_threads):
    seen = simulate(monkeypatch, threads.adapt, lambda n, t: 10 if n == 2 else 6, lambda t: 0.02, 120)
    assert {n for _, n in seen} == {2} and threads.current_policy().get("probes", 0) == 0


def test_beside_work_that_yields_two_threads_stay_when_they_measure_faster(monkeypatch, keep_threads):
    """The browser case with the app's page threads niced: 0.7 un-niced cores elsewhere, 2 threads faster."""
    seen = simulate(monkeypatch, threads.adapt, lambda n, t: 8 if n == 2 else 5, lambda t: 0.7, 200)
    rec = threads.current_policy()
    assert seen[-1][1] == 2 and rec["switches"] == 0 and 1 <= rec["probes"] <= 5  # losing probes back off
    assert sum(1 for _, n in seen if n == 1) < 0.15 * len(seen)


def test_when_two_threads_collapse_beside_busy_cores_one_thread_takes_over(monkeypatch, keep_threads):
    seen = simulate(monkeypatch, threads.adapt, lambda n, t: 2 if n == 2 else 5, lambda t: 1.3, 120)
    first_one = next(t for t, n in seen if n == 1)
    assert first_one < 20 and all(n == 1 for t, n in seen if t > first_one + 5)
    rec = threads.current_policy()
    assert rec["switches"] == 1 and rec["min_threads"] == 1 and rec["threads_at_end"] == 1


def test_a_run_started_beside_another_takes_every_core_once_alone(monkeypatch, keep_threads):
    def speed(n, t):
        busy = t < 60  # the other run trains for the first minute
        return {1: 6, 2: 4 if busy else 10}[n]

    monkeypatch.setattr(threads, "PROBE_EVERY", 50.0)  # so only the freed core can explain a quick switch
    seen = simulate(monkeypatch, threads.adapt, speed, lambda t: 1.0 if t < 60 else 0.02, 120, concurrent=2)
    assert all(n == 1 for t, n in seen if t < 60)  # no room for a second thread: never tried
    assert seen[-1][1] == 2 and threads.current_policy()["max_threads"] == 2
    assert next(t for t, n in seen if n == 2) < 67  # the freed core is tried at once, not at the next probe time


def test_a_fixed_thread_count_is_never_adapted(monkeypatch, keep_threads):
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    fixed = threads.configure_process(threads.policy(2))
    for i in range(1, 200):
        threads.adapt(Progress(10 * i, 2000, 1.0, 1.0, 0.0, 0.0))
    assert not fixed.applied["adaptive"] and torch.get_num_threads() == 2


def test_lower_thread_priority_lowers_only_the_calling_thread():
    import os
    import threading

    seen = {}

    def page_work():
        tid = threading.get_native_id()
        seen["ok"] = threads.lower_thread_priority(10)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["again"] = threads.lower_thread_priority(5)  # never raises a priority back
        seen["nice_after"] = os.getpriority(os.PRIO_PROCESS, tid)

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=page_work)
    t.start()
    t.join()
    assert seen["ok"] and seen["nice"] == max(10, main_before) and seen["nice_after"] == seen["nice"]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_a_training_marks_its_process_and_dead_marks_are_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv("MSCOMPARE_TRAINING_MARKS", str(tmp_path / "marks"))
    assert threads.training_processes() == 0  # no folder yet
    with threads.training_mark():
        assert threads.training_processes() == 1
        (tmp_path / "marks" / "999999999-12345-1").touch()  # a killed trainer's leftover
        (tmp_path / "marks" / "stray").touch()
        assert threads.training_processes() == 1
        assert len(list((tmp_path / "marks").iterdir())) == 1
    assert threads.training_processes() == 0 and not list((tmp_path / "marks").iterdir())


def test_a_cli_run_is_seen_as_training_from_another_process(tmp_path):
    """What the app's pages check (ui.yield_to_training) while a `python -m mscompare train` runs elsewhere."""
    import subprocess
    import sys

    from conftest import ROOT, digits_npz, wait_for

    digits_npz(tmp_path)
    before = threads.training_processes()
    proc = subprocess.Popen([sys.executable, "-m", "mscompare", "train", "--model", "mobilenet", "--dataset",
                             "tinydigits", "--data-root", str(tmp_path), "--iters", "100000", "--batch-size", "32",
                             "--width", "8", "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: threads.training_processes() != before, "the CLI run to mark itself as training", 60)
        assert threads.training_processes() == before + 1
    finally:
        proc.kill()
        proc.wait()
    assert threads.training_processes() == before  # the killed run's mark is recognised as dead
