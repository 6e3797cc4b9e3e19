"""The worker-process executor: a queue of stored runs, trained by `concurrency` worker processes at a time."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

from mscompare import lifecycle
from mscompare.config import TrainConfig
from mscompare.events import Progress, RunEnd
from mscompare.jobs import Job
from mscompare.models import ModelConfig
from mscompare.runs import ACTIVE, RunStore
from mscompare.threads import GPU_SLOTS, auto_concurrency, policy, process_nice, worker_env

MAX_SLOTS = 8  # the most runs side by side the app offers
KILL_AFTER = 10.0  # seconds a cancelled worker gets to stop before it is killed


class RunManager:
    """Executor: stored runs trained by `concurrency` worker processes (mscompare.worker) at a time, with a live
    snapshot of each. A failure of any kind (bad data, out of memory, a CUDA assert, a crashed or killed worker,
    a store write) fails that run only."""

    def __init__(self, store: RunStore, concurrency: int = 0, checkpoint_dir: str | Path | None = None,
                 threads: int = 0, fuse: str = "auto"):
        self.store = store
        self.concurrency = concurrency or auto_concurrency()
        self.threads, self.fuse = threads, fuse
        self.checkpoint_dir = Path(checkpoint_dir if checkpoint_dir is not None else store.dir / "checkpoints")
        self._q: queue.Queue[tuple[str, ...]] = queue.Queue()
        self._lock = threading.Lock()
        self._live: dict[str, dict] = {}
        self._procs: dict[str, Worker] = {}
        self._group: dict[str, tuple[str, ...]] = {}
        self._cancel: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._ends: queue.Queue[RunEnd] = queue.Queue()
        self._closed = threading.Event()
        self._gpu = threading.Semaphore(GPU_SLOTS)
        self.set_concurrency(self.concurrency)

    def set_concurrency(self, n: int) -> None:
        """Train up to `n` run groups side by side from now on (a group already going finishes where it is)."""
        if n < 1:
            raise ValueError(f"concurrency must be >= 1, got {n}")
        self.concurrency = n
        # every slot a user can ask for exists from the start: a thread inherits its creator's scheduling
        # priority, and the app's page threads may run lowered (threads.lower_thread_priority)
        for i in range(len(self._threads), max(n, MAX_SLOTS)):
            t = threading.Thread(target=self._work, args=(i,), daemon=True, name=f"mscompare-slot-{i}")
            self._threads.append(t)
            t.start()

    def add(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "", batch: str = "") -> str:
        """Store one run (lifecycle.create) and queue it; its id."""
        return self.add_many([(model_cfg, train_cfg)], tag, batch)[0]

    def add_many(self, runs: list[tuple[ModelConfig, TrainConfig]], tag: str = "", batch: str = "",
                 fuse: str | None = None) -> list[str]:
        """Store runs and queue them together (submit); their ids."""
        ids = [lifecycle.create(self.store, cfg, train_cfg, tag, batch) for cfg, train_cfg in runs]
        self.submit(ids, fuse)
        return ids

    def submit(self, rids: list[str], fuse: str | None = None) -> None:
        """Queue stored runs together: all are known as queued before the first starts, so each gets its share
        of the cores from the start. Runs that differ only in seed form one group, trained in one worker (fused
        where fuse_decision says so); a group takes one slot, as one run of K times the work. With `auto`, seeds
        are grouped only on a GPU: on CPUs, separate runs side by side beat fused ones (docs/bench-fused.txt),
        and a group that the probe decides not to fuse would train its seeds one after another in one slot."""
        from mscompare.fused import group_key
        from mscompare.train import resolve_device

        fuse = fuse or self.fuse
        groups: dict[str, tuple[list[str], int]] = {}
        for rid in rids:
            row = self.store.get(rid)
            cfg = ModelConfig.from_dict(json.loads(row["model_config"]))
            train_cfg = TrainConfig.from_dict(json.loads(row["train_config"]))
            with self._lock:
                self._live[rid] = {"status": "queued", "iter": 0, "iters": train_cfg.iters}
            grouped = fuse == "on" or (fuse == "auto" and resolve_device(train_cfg.device).type == "cuda")
            key = group_key(cfg, train_cfg) if grouped else rid
            groups.setdefault(key, ([], (row["macs"] or row["params"] or 1) * train_cfg.iters))[0].append(rid)
        work = {tuple(g): w * len(g) for g, w in groups.values()}
        for g in sorted(work, key=lambda g: -work[g]):  # the longest first: a short run ends the batch, not a long one
            with self._lock:
                for rid in g:
                    self._group[rid] = g
            self._q.put((fuse, g))

    def ended(self, timeout: float = 0.0) -> list[RunEnd]:
        """The runs that ended since the last call (as the store records them), waiting up to `timeout` s."""
        try:
            out = [self._ends.get(timeout=timeout) if timeout > 0 else self._ends.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._ends.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout: float = 30.0) -> None:
        """Wait up to `timeout` s for what still trains, cancel what is left, then end the slot threads (a
        manager that is done with, a sweep's, leaves no threads behind in a long-running server)."""
        if not self.wait(timeout):
            for rid, snap in self.snapshots().items():
                if snap.get("status") in ACTIVE:
                    self.cancel(rid)
            self.wait(KILL_AFTER + 5)
        self._closed.set()

    def cancel(self, rid: str) -> None:
        """Cancel a queued run at once, a running one within KILL_AFTER seconds (a lone run's worker is killed if
        it doesn't stop; a run trained in a group stops at its next step and the others go on)."""
        with self._lock:
            self._cancel.add(rid)
            live = self._live.get(rid)
            proc = self._procs.get(rid)
            group = self._group.get(rid, (rid,))
            queued = live is not None and live["status"] == "queued"
            if queued:
                live["status"] = "cancelled"
            whole = all(r in self._cancel for r in group)
            starting = proc is None and rid in self._group and live is not None and live["status"] == "running"
        if starting:
            return  # a slot took it and is starting its worker, which it cancels as soon as the worker exists
        if queued:
            self._settle(RunEnd(rid, "cancelled", "cancelled before it started"))
        elif proc is not None and not whole:
            proc.cancel(rid)
        elif proc is not None:
            proc.signal(signal.SIGTERM)
            kill = threading.Timer(KILL_AFTER, proc.signal, (signal.SIGKILL,))
            kill.daemon = True  # a process that is done (a stopped CLI sweep) exits now, not when the timer fires
            kill.start()
        elif live is None or live["status"] in ACTIVE:  # not ours: settle the record
            row = self.store.get(rid)
            if row and row["status"] in ACTIVE:
                self._settle(RunEnd(rid, "cancelled", "cancelled; no worker was running it"))

    def snapshot(self, rid: str) -> dict:
        with self._lock:
            return dict(self._live.get(rid, {}))

    def snapshots(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._live.items()}

    def active(self) -> bool:
        with self._lock:
            return any(v["status"] in ACTIVE for v in self._live.values())

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.time() + timeout
        while self.active():
            if end is not None and time.time() > end:
                return False
            time.sleep(0.05)
        return True

    def _set(self, rid: str, **kw) -> None:
        with self._lock:
            self._live.setdefault(rid, {}).update(kw)

    def _settle(self, e: RunEnd) -> None:
        """A run of this manager ended: the store (unless it recorded an end already), the snapshot, `ended`."""
        try:
            lifecycle.end(self.store, e, only_active=True)
            row = self.store.get(e.run_id)
            self._set(e.run_id, status=row["status"], message=row["message"], test_acc=row["test_acc"])
            if row["status"] != e.status:  # ended elsewhere first (a cancel from another page or process)
                e = RunEnd(e.run_id, row["status"], row["message"] or "") if row["status"] != "done" else e
        except Exception as ex:  # noqa: BLE001 - e.g. the store is unwritable: show it live
            e = RunEnd(e.run_id, "failed", lifecycle.failure_message(ex))
            self._set(e.run_id, status="failed", message=e.message)
        self._ends.put(e)

    def _work(self, slot: int) -> None:
        while not self._closed.is_set():
            if slot >= self.concurrency:  # lowered: this slot idles until raised again
                time.sleep(0.5)
                continue
            try:
                fuse, group = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                rids = [r for r in group if self._live[r]["status"] != "cancelled"]
                for rid in rids:
                    self._live[rid]["status"] = "running"
            if not rids:
                continue
            try:
                with self._gpu if self._on_gpu(rids[0]) else contextlib.nullcontext():
                    ended = self._run_in_worker(rids, fuse)
            except Exception as e:  # noqa: BLE001 - the slot survives anything, the runs record why they failed
                ended = {rid: RunEnd(rid, "failed", lifecycle.failure_message(e)) for rid in rids}
            for rid in rids:
                self._settle(ended.get(rid) or RunEnd(rid, "failed", "the worker ended without a result"))

    def _on_gpu(self, rid: str) -> bool:
        from mscompare.train import resolve_device

        return resolve_device(json.loads(self.store.get(rid)["train_config"]).get("device", "auto")).type == "cuda"

    def _run_in_worker(self, rids: list[str], fuse: str) -> dict[str, RunEnd]:
        """Train `rids` (one group) in a fresh worker process; how each run ended. A run the worker reports
        ended is settled at once (a fused group's other runs may train on)."""
        from mscompare import worker

        jobs = [Job.of(self.store, rid, self.checkpoint_dir) for rid in rids]
        with self._lock:  # groups that will share the cores with this one: each gets its share, a lone one all
            sharing = len({self._group.get(r, (r,)) for r, v in self._live.items() if v.get("status") in ACTIVE})
        pol = policy(self.threads or jobs[0].train_config.threads, max(1, min(self.concurrency, sharing)))
        job = {"runs": [j.to_dict() for j in jobs], "fuse": fuse, "policy": pol, "nice": process_nice(),
               "env": worker_env(pol)}
        for rid in rids:  # this process owns the runs: it settles them if the worker dies
            lifecycle.start(self.store, rid)
        ctx = forkserver()
        events, events_w = ctx.Pipe(duplex=False)
        control_r, control = ctx.Pipe(duplex=False)
        fd, errlog = tempfile.mkstemp(prefix="mscompare-worker-", suffix=".log")  # a file: a chatty worker can't block
        os.close(fd)
        proc = Worker(ctx.Process(target=worker.run, args=(job, events_w, control_r, errlog), daemon=True,
                                  name="mscompare-worker"), control)
        ended: dict[str, RunEnd] = {}
        try:
            _start(proc.process)
            events_w.close()
            control_r.close()
            with self._lock:
                for rid in rids:
                    self._procs[rid] = proc
                early = [rid for rid in rids if rid in self._cancel]
            for rid in early:
                self.cancel(rid)
            try:
                while True:
                    try:
                        msg = events.recv()
                    except EOFError:  # the worker has ended
                        break
                    if msg["event"] == "progress":
                        p = Progress.from_dict(msg)
                        lifecycle.record(self.store, msg["run_id"], p)
                        self._set(msg["run_id"], **p.to_dict())
                    else:  # one run ended, maybe while the rest of its group trains on: settle it now
                        e = ended[msg["run_id"]] = RunEnd.from_dict(msg)
                        lifecycle.end(self.store, e)
                        self._set(e.run_id, status=e.status, message=e.message)
            except BaseException:  # e.g. the store can't be written: stop the worker, then report the runs failed
                proc.signal(signal.SIGKILL)
                proc.reap()
                raise
            code = proc.reap()
            with open(errlog, errors="replace") as f:
                err = f.read()[-4000:]
        finally:
            proc.finished.set()
            for conn in (events, control, events_w, control_r):
                conn.close()
            with contextlib.suppress(OSError):
                os.unlink(errlog)
            with self._lock:
                for rid in rids:
                    self._procs.pop(rid, None)
        tail = err.strip().splitlines()[-1] if err.strip() else ""
        for rid in rids:
            if rid in ended:
                continue
            if rid in self._cancel:
                ended[rid] = RunEnd(rid, "cancelled", "cancelled by the user (the worker was stopped)")
            else:
                ended[rid] = RunEnd(rid, "failed",
                                    f"the worker process died (exit code {code}){': ' + tail if tail else ''}")
        return ended


class Worker:
    """One worker process as its slot and `cancel` see it: signals and cancel requests stop once it has ended."""

    def __init__(self, process, control):
        self.process, self.control = process, control
        self.finished = threading.Event()  # set by the slot once the process has ended and is reaped
        self._sending = threading.Lock()  # cancels of two runs of a group, from two page threads

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def signal(self, sig: int) -> None:
        if not self.finished.is_set() and self.pid is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(self.pid, sig)

    def cancel(self, rid: str) -> None:
        with self._sending, contextlib.suppress(OSError, ValueError):  # OSError: the worker has just ended
            self.control.send(rid)

    def reap(self) -> int | None:
        """Wait for the process to end; its exit code. A forkserver child's exit code can be read only once, and
        Process.start() reads those of ended siblings too, so reading and starting take turns (_REAP)."""
        multiprocessing.connection.wait([self.process.sentinel])
        with _REAP:
            self.process.join()
            return self.process.exitcode


_REAP = threading.Lock()
_NO_MAIN = types.ModuleType("__main__")  # no __file__, no __spec__: nothing for a worker to import


def _start(process) -> None:
    """Start a worker with this process's main module hidden. A forkserver child imports the parent's main script
    before it runs its target: the app's last page script (Streamlit installs it as __main__), which would run
    its page, or a user's script, which would need a main guard. A worker needs neither."""
    with _REAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = _NO_MAIN
        try:
            process.start()
        finally:
            if sys.modules.get("__main__") is _NO_MAIN:  # not replaced meanwhile (Streamlit starting a page)
                sys.modules["__main__"] = main


def forkserver():
    """The multiprocessing context that starts workers: forked from one server process per app or CLI that has
    imported worker.PRELOAD once. The server starts with the first worker, from a slot thread, so it and every
    worker run at the priority slots have (lower_thread_priority never reaches them)."""
    from mscompare.worker import PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx
