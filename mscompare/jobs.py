"""Running stored runs: one trial's work, its events into the store, in-process (CLI) or in worker processes (app)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from mscompare.config import TrainConfig
from mscompare.models import ModelConfig
from mscompare.predictions import path_for as predictions_path
from mscompare.runs import ACTIVE, RunStore, StoreError, owner_id
from mscompare.threads import auto_concurrency, policy, process_nice, worker_env

MAX_SLOTS = 8  # the most runs side by side the app offers
KILL_AFTER = 10.0  # seconds a cancelled worker gets to stop before it is killed


def cost(mcfg: ModelConfig) -> tuple[int, int | None]:
    """Params (always) and MACs (None where fvcore is missing), known before training starts."""
    from mscompare.models import build_model, count_params

    try:
        from mscompare.profile import cached_profile
    except ImportError:
        return count_params(build_model(mcfg)), None
    p = cached_profile(mcfg)
    return p.params, p.macs


def run_trial(mcfg: ModelConfig, tcfg: TrainConfig, checkpoint: str | None, emit: Callable[[dict], None],
              should_stop: Callable[[], bool] | None = None, data=None, run_id: str = "",
              predictions: str | None = None) -> dict:
    """Load the data, train, save the checkpoint and the per-image test predictions: the work of one run,
    wherever it runs. Raises on failure."""
    from mscompare.checkpoints import save_checkpoint
    from mscompare.data import load_dataset
    from mscompare.train import train

    from mscompare.threads import adapt

    train_data, test_data = data or load_dataset(tcfg.dataset, tcfg.data_root, skip_bad=tcfg.skip_bad,
                                                 size=tcfg.image_size or None)

    def progress(ev: dict) -> None:
        adapt(ev)  # on the training thread: the auto thread policy keeps the fastest thread count
        emit(ev)

    res = train(mcfg, tcfg, train_data, test_data, progress, should_stop)
    if checkpoint:
        meta = {"classes": train_data.classes, "norm": res["norm"], "dataset": tcfg.dataset, "iters": tcfg.iters,
                "test_acc": res["test_acc"], "run_id": run_id, "preset": tcfg.preset, "seed": tcfg.seed}
        save_checkpoint(checkpoint, res["model"], mcfg, meta)
    if predictions:
        from mscompare.predictions import save

        save(predictions, res["predictions"])
    skipped = len(train_data.skipped) + len(test_data.skipped)
    return {"test_acc": res["test_acc"], "seconds": res["seconds"], "images_per_s": res["images_per_s"],
            "env": {**res["env"], "skipped_files": skipped}, "checkpoint": checkpoint, "evaluation": res["evaluation"],
            "message": f"skipped {skipped} bad file(s)" if skipped else ""}


def failure_message(e: BaseException) -> str:
    """One line a user can act on, for any exception a run can raise."""
    from mscompare.data import DatasetError
    from mscompare.train import TrainingError

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return "out of memory; lower the batch size or the width. " + text[:300]
    if isinstance(e, (DatasetError, TrainingError, StoreError, ValueError)):
        return text[:2000]
    return f"{type(e).__name__}: {text[:1000]}"


def apply_event(store: RunStore, rid: str, ev: dict) -> None:
    """Record one progress event: eval points go into the curve; step events are live-only."""
    if ev.get("kind") == "eval":
        store.add_point(rid, ev["iter"], ev["test_acc"], ev["loss"], ev["images_per_s"])


def finish(store: RunStore, rid: str, status: str, result: dict | None = None, message: str = "") -> None:
    fields = {"status": status, "finished": time.time(), "message": message or (result or {}).get("message", "")}
    if result:
        fields.update({k: result[k] for k in ("test_acc", "seconds", "images_per_s", "env", "checkpoint",
                                              "evaluation") if k in result})
    store.update(rid, **fields)


def execute(store: RunStore, rid: str, checkpoint_dir: str | Path | None = None, *, data=None,
            on_progress=None, should_stop=None) -> dict:
    """Run one stored run in this process, recording every point; the status says how it ended. Never raises
    for a failed run (KeyboardInterrupt marks it interrupted and is raised again)."""
    from mscompare.train import Cancelled

    row = store.get(rid)
    mcfg = ModelConfig.from_dict(json.loads(row["model_config"]))
    tcfg = TrainConfig.from_dict(json.loads(row["train_config"]))
    ckpt = str(Path(checkpoint_dir) / f"{rid}.safetensors") if checkpoint_dir is not None else None
    preds = str(predictions_path(store.dir, rid))
    try:
        store.update(rid, status="running", started=time.time(), pid=os.getpid(), owner=owner_id())
        if row["params"] is None:
            params, macs = cost(mcfg)
            store.update(rid, params=params, macs=macs)

        def emit(ev):
            apply_event(store, rid, ev)
            if on_progress:
                on_progress(ev)

        finish(store, rid, "done", run_trial(mcfg, tcfg, ckpt, emit, should_stop, data, rid, preds))
    except Cancelled:
        _finish_quietly(store, rid, "cancelled", "cancelled by the user")
    except KeyboardInterrupt:
        _finish_quietly(store, rid, "interrupted", "interrupted (Ctrl-C)")
        raise
    except Exception as e:  # noqa: BLE001 - any failure becomes a visible status
        _finish_quietly(store, rid, "failed", failure_message(e))
        _free_device_memory()
    try:
        return store.get(rid)
    except StoreError as e:  # the store itself is failing: report the run from what we know
        return {**row, "status": "failed", "message": failure_message(e)}


def _free_device_memory() -> None:
    """Give a failed run's cached GPU memory back, so the next run in this process starts clean."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _finish_quietly(store: RunStore, rid: str, status: str, message: str) -> None:
    try:
        finish(store, rid, status, message=message)
    except StoreError:
        pass  # the caller reads the row back and reports the store failure


class RunManager:
    """A queue of stored runs trained by `concurrency` worker processes at a time. A failure of any kind
    (bad data, out of memory, a CUDA assert, a crashed or killed worker, a store write) fails that run only."""

    def __init__(self, store: RunStore, concurrency: int = 0, checkpoint_dir: str | Path | None = None,
                 threads: int = 0):
        self.store = store
        self.concurrency = concurrency or auto_concurrency()
        self.threads = threads
        self.checkpoint_dir = Path(checkpoint_dir if checkpoint_dir is not None else store.dir / "checkpoints")
        self._q: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._live: dict[str, dict] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._cancel: set[str] = set()
        self._threads: list[threading.Thread] = []
        self.set_concurrency(self.concurrency)

    def set_concurrency(self, n: int) -> None:
        """Train up to `n` runs side by side from now on (a run already going finishes where it is)."""
        if n < 1:
            raise ValueError(f"concurrency must be >= 1, got {n}")
        self.concurrency = n
        # every slot a user can ask for exists from the start: a thread inherits its creator's scheduling
        # priority, and the app's page threads may run lowered (threads.lower_thread_priority)
        for i in range(len(self._threads), max(n, MAX_SLOTS)):
            t = threading.Thread(target=self._work, args=(i,), daemon=True, name=f"mscompare-slot-{i}")
            self._threads.append(t)
            t.start()

    def submit(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "", batch: str = "") -> str:
        return self.submit_many([(model_cfg, train_cfg)], tag, batch)[0]

    def submit_many(self, runs: list[tuple[ModelConfig, TrainConfig]], tag: str = "", batch: str = "") -> list[str]:
        """Queue runs together: all are known as queued before the first starts, so each gets its share of
        the cores from the start (a lone first run would otherwise take them all)."""
        ids, work = [], {}
        for cfg, train_cfg in runs:
            params, macs = cost(cfg)
            rid = self.store.create(cfg, train_cfg, tag, batch, params=params, macs=macs)
            with self._lock:
                self._live[rid] = {"status": "queued", "iter": 0, "iters": train_cfg.iters}
            ids.append(rid)
            work[rid] = (macs or params) * train_cfg.iters
        for rid in sorted(ids, key=lambda r: -work[r]):  # the longest first: a short run ends the batch, not a long one
            self._q.put(rid)
        return ids

    def cancel(self, rid: str) -> None:
        """Cancel a queued run at once, a running one within KILL_AFTER seconds (killed if it doesn't stop)."""
        with self._lock:
            self._cancel.add(rid)
            live = self._live.get(rid)
            proc = self._procs.get(rid)
            queued = live is not None and live["status"] == "queued"
            if queued:
                live["status"] = "cancelled"
        if queued:
            finish(self.store, rid, "cancelled", message="cancelled before it started")
        elif proc is not None:
            _signal(proc, signal.SIGTERM)
            threading.Timer(KILL_AFTER, lambda: proc.poll() is None and _signal(proc, signal.SIGKILL)).start()
        elif live is None or live["status"] in ACTIVE:  # not ours, or stuck between states: settle the record
            row = self.store.get(rid)
            if row and row["status"] in ACTIVE:
                finish(self.store, rid, "cancelled", message="cancelled; no worker was running it")
                with self._lock:
                    if rid in self._live:
                        self._live[rid]["status"] = "cancelled"

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

    def _work(self, slot: int) -> None:
        while True:
            if slot >= self.concurrency:  # lowered: this slot idles until raised again
                time.sleep(0.5)
                continue
            try:
                rid = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                with self._lock:
                    if self._live[rid]["status"] == "cancelled":
                        continue
                    self._live[rid]["status"] = "running"
                status, message = self._run_in_worker(rid)
            except Exception as e:  # noqa: BLE001 - the slot survives anything, the run records why it failed
                status, message = "failed", failure_message(e)
            try:
                if self.store.get(rid)["status"] in ACTIVE:
                    finish(self.store, rid, status, message=message)
                row = self.store.get(rid)
                self._set(rid, status=row["status"], message=row["message"], test_acc=row["test_acc"])
            except Exception as e:  # noqa: BLE001 - e.g. the store is unwritable: show it live
                self._set(rid, status="failed", message=failure_message(e))

    def _run_in_worker(self, rid: str) -> tuple[str, str]:
        """Train `rid` in a fresh worker process; returns (status, message) where the worker didn't finish it."""
        row = self.store.get(rid)
        tcfg = json.loads(row["train_config"])
        with self._lock:  # runs that will share the cores with this one: each gets its share, a lone run all
            sharing = sum(v.get("status") in ACTIVE for v in self._live.values())
        pol = policy(self.threads or tcfg.get("threads", 0), max(1, min(self.concurrency, sharing)))
        job = {"run_id": rid, "model_config": json.loads(row["model_config"]), "train_config": tcfg,
               "checkpoint": str(self.checkpoint_dir / f"{rid}.safetensors"), "policy": pol,
               "predictions": str(predictions_path(self.store.dir, rid)),
               "nice": process_nice()}
        self.store.update(rid, status="running", started=time.time())
        errlog = tempfile.TemporaryFile("w+")  # a file, so a chatty worker can't fill a pipe and block
        proc = subprocess.Popen([sys.executable, "-m", "mscompare.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errlog, text=True, env=worker_env(pol),
                                cwd=str(Path(__file__).resolve().parent.parent))
        with self._lock:
            self._procs[rid] = proc
            cancelled_early = rid in self._cancel
        if cancelled_early:
            _signal(proc, signal.SIGTERM)
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.close()
            final = None
            try:
                for line in proc.stdout:
                    ev = json.loads(line)
                    if ev.get("event") == "progress":
                        apply_event(self.store, rid, ev)
                        self._set(rid, **{k: v for k, v in ev.items() if k != "event"})
                    else:
                        final = ev
            except BaseException:  # e.g. the store can't be written: stop the worker, then report the run failed
                _signal(proc, signal.SIGKILL)
                proc.wait()
                raise
            code = proc.wait()
            errlog.seek(0)
            err = errlog.read()[-4000:]
        finally:
            errlog.close()
            with self._lock:
                self._procs.pop(rid, None)
        if final is None:
            if rid in self._cancel:
                return "cancelled", "cancelled by the user (the worker was stopped)"
            tail = err.strip().splitlines()[-1] if err.strip() else ""
            return "failed", f"the worker process died (exit code {code}){': ' + tail if tail else ''}"
        if final["event"] == "done":
            finish(self.store, rid, "done", final["result"])
            return "done", ""
        return final["event"], final.get("message", "")


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
