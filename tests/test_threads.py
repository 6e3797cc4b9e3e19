"""The auto thread policy: its share of the cores to start with, then fewer threads while others keep cores busy."""
import torch

from mscompare import threads


def test_auto_threads_follow_the_load_of_other_processes(monkeypatch):
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)  # clock ticks per second
    clock = {"t": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    ticks = {"busy": 0, "own": 0}
    monkeypatch.setattr(threads, "_busy_ticks", lambda: (ticks["busy"], ticks["own"]))
    before = torch.get_num_threads()
    try:
        pol = threads.configure_process(threads.policy(0, concurrent=1))
        assert pol["threads"] == 2 and pol["adaptive"] and torch.get_num_threads() == 2

        def interval(own_cores, other_cores, seconds=3.0):
            clock["t"] += seconds
            ticks["own"] += int(own_cores * 100 * seconds)
            ticks["busy"] += int((own_cores + other_cores) * 100 * seconds)
            threads.adapt()

        threads.adapt()  # the first look only takes a reading
        interval(2.0, 0.1)
        assert torch.get_num_threads() == 2  # a quiet machine: keep both cores
        interval(1.0, 1.4)  # a browser keeps 1.4 cores busy
        assert torch.get_num_threads() == 1
        interval(1.0, 0.2)  # it went idle again
        assert torch.get_num_threads() == 2
        rec = threads.current_policy()
        assert rec["switches"] == 2 and rec["min_threads"] == 1 and rec["source"] == "auto"
        fixed = threads.configure_process(threads.policy(2))  # the user's choice is never adapted
        interval(1.0, 1.9)
        assert not fixed["adaptive"] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_two_runs_side_by_side_get_one_core_each(monkeypatch):
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    assert threads.policy(0, concurrent=2)["threads"] == 1 and threads.policy(0, concurrent=1)["threads"] == 2
    assert threads.auto_concurrency("cpu") == 2 and threads.auto_concurrency("cuda") == 1


def test_a_run_that_started_beside_another_takes_every_core_once_alone(monkeypatch):
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    clock = {"t": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    ticks = {"busy": 0, "own": 0}
    monkeypatch.setattr(threads, "_busy_ticks", lambda: (ticks["busy"], ticks["own"]))
    before = torch.get_num_threads()
    try:
        pol = threads.configure_process(threads.policy(0, concurrent=2))
        assert pol["threads"] == 1 and torch.get_num_threads() == 1

        def interval(own_cores, other_cores, seconds=3.0):
            clock["t"] += seconds
            ticks["own"] += int(own_cores * 100 * seconds)
            ticks["busy"] += int((own_cores + other_cores) * 100 * seconds)
            threads.adapt()

        threads.adapt()
        interval(1.0, 1.0)  # the other run trains
        assert torch.get_num_threads() == 1
        interval(1.0, 0.5)  # half a core busy elsewhere: not a clear margin, stay
        assert torch.get_num_threads() == 1
        interval(1.0, 0.05)  # the other run finished
        assert torch.get_num_threads() == 2
        interval(2.0, 0.4)  # 1.6 cores free: within half a core of 2 threads, stay
        assert torch.get_num_threads() == 2
        interval(2.0, 1.0)  # a new run started
        assert torch.get_num_threads() == 1
        rec = threads.current_policy()
        assert rec["switches"] == 2 and rec["min_threads"] == 1 and rec["max_threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_next_threads_table():
    assert threads.next_threads(2, 1.95, 2) == 2
    assert threads.next_threads(2, 1.6, 2) == 2
    assert threads.next_threads(2, 1.4, 2) == 1
    assert threads.next_threads(2, 1.2, 2) == 1
    assert threads.next_threads(1, 1.7, 2) == 1
    assert threads.next_threads(1, 1.8, 2) == 2
    assert threads.next_threads(1, 0.1, 2) == 1  # never below one
    assert threads.next_threads(1, 3.9, 4) == 4
    assert threads.next_threads(4, 1.0, 4) == 1


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
