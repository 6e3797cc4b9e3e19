"""Running stored runs: one trial's work, its events into the store, in-process (CLI) or in worker processes (app)."""
from __future__ import annotations

import contextlib
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
from mscompare.threads import GPU_SLOTS, auto_concurrency, policy, process_nice, worker_env

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


def _load(tcfg: TrainConfig, data=None):
    from mscompare.data import load_dataset

    return data or load_dataset(tcfg.dataset, tcfg.data_root, skip_bad=tcfg.skip_bad, size=tcfg.image_size or None)


def _record(mcfg: ModelConfig, tcfg: TrainConfig, res: dict, data, checkpoint: str | None, predictions: str | None,
            run_id: str) -> dict:
    """Save a trained run's checkpoint and per-image predictions; its result fields for the store."""
    from mscompare.checkpoints import save_checkpoint

    train_data, test_data = data
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


def _adapting(emit: Callable[[dict], None]) -> Callable[[dict], None]:
    from mscompare.threads import adapt

    def progress(ev: dict) -> None:
        adapt(ev)  # on the training thread: the auto thread policy keeps the fastest thread count
        emit(ev)

    return progress


def run_trial(mcfg: ModelConfig, tcfg: TrainConfig, checkpoint: str | None, emit: Callable[[dict], None],
              should_stop: Callable[[], bool] | None = None, data=None, run_id: str = "",
              predictions: str | None = None) -> dict:
    """Load the data, train, save the checkpoint and the per-image test predictions: the work of one run,
    wherever it runs. Raises on failure."""
    from mscompare.train import train

    data = _load(tcfg, data)
    res = train(mcfg, tcfg, data[0], data[1], _adapting(emit), should_stop)
    return _record(mcfg, tcfg, res, data, checkpoint, predictions, run_id)


def fuse_decision(mcfgs: list[ModelConfig], tcfgs: list[TrainConfig], fuse: str) -> tuple[bool, dict]:
    """Whether these runs train fused, and why: `on` fuses whatever can be fused, `off` never, `auto` where
    fused_speedup measures fusing at least FUSE_GAIN times faster on this machine (and says so in the runs' env)."""
    from mscompare.fused import FUSE_GAIN, FUSE_MODES, fused_speedup, why_not_fused

    if fuse not in FUSE_MODES:
        raise ValueError(f"fuse must be one of {', '.join(FUSE_MODES)}, got {fuse!r}")
    reason = why_not_fused(mcfgs, tcfgs)
    if fuse == "off" or reason is not None:
        return False, ({} if fuse == "off" or reason == "a single run" else {"not_fused": reason})
    if fuse == "on":
        return True, {}
    probe = fused_speedup(mcfgs[0], tcfgs[0], len(tcfgs))
    return probe["ratio"] >= FUSE_GAIN, {"fuse_probe": probe}


def run_group(jobs: list[dict], emit: Callable[[str, dict], None], should_stop: Callable[[str], bool] | None = None,
              data=None, fuse: str = "auto",
              on_end: Callable[[str, BaseException], None] | None = None) -> dict[str, dict | BaseException]:
    """Train the runs of `jobs` (dicts with run_id, model_config, train_config, checkpoint, predictions): as one
    fused computation where they share architecture and protocol and fuse_decision says so, else one after
    another. Per run id: its result fields, or the exception that ended it (the others go on); `on_end` hears
    at once of a fused run that ends early (cancelled or failed)."""
    from mscompare.fused import train_fused

    mcfgs = [ModelConfig.from_dict(j["model_config"]) for j in jobs]
    tcfgs = [TrainConfig.from_dict(j["train_config"]) for j in jobs]
    ids = [j["run_id"] for j in jobs]
    stop = should_stop or (lambda rid: False)
    fused, why = fuse_decision(mcfgs, tcfgs, fuse)
    if not fused:
        out = {}
        for j, m, t in zip(jobs, mcfgs, tcfgs):
            rid = j["run_id"]
            try:
                out[rid] = run_trial(m, t, j.get("checkpoint"), lambda ev, r=rid: emit(r, ev),
                                     lambda r=rid: stop(r), data, rid, j.get("predictions"))
                out[rid]["env"].update(why)
            except Exception as e:  # noqa: BLE001 - this run's failure; the next run still trains
                out[rid] = e
        return out
    data = _load(tcfgs[0], data)
    results = train_fused(mcfgs[0], tcfgs, data[0], data[1],
                          [_adapting(lambda ev, r=rid: emit(r, ev)) if k == 0 else (lambda ev, r=rid: emit(r, ev))
                           for k, rid in enumerate(ids)], [lambda r=rid: stop(r) for rid in ids],
                          (lambda k, e: on_end(ids[k], e)) if on_end else None)
    out = {}
    for j, m, t, res in zip(jobs, mcfgs, tcfgs, results):
        try:
            out[j["run_id"]] = res if isinstance(res, BaseException) else _record(
                m, t, {**res, "env": {**res["env"], **why}}, data, j.get("checkpoint"), j.get("predictions"),
                j["run_id"])
        except Exception as e:  # noqa: BLE001 - e.g. the checkpoint can't be written: this run fails
            out[j["run_id"]] = e
    return out


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
    """Run one stored run in this process (see execute_group)."""
    return execute_group(store, [rid], checkpoint_dir, data=data,
                         on_progress=on_progress and (lambda _rid, ev: on_progress(ev)),
                         should_stop=should_stop and (lambda _rid: should_stop()))[0]


def execute_group(store: RunStore, rids: list[str], checkpoint_dir: str | Path | None = None, *, data=None,
                  on_progress=None, should_stop=None, fuse: str = "auto") -> list[dict]:
    """Run stored runs in this process, fused where they can be (run_group), recording every point; each run's
    status says how it ended. Never raises for a failed run (KeyboardInterrupt marks the unfinished ones
    interrupted and is raised again). A failure of the whole group is recorded on each of its runs."""
    from mscompare.train import Cancelled

    rows = [store.get(rid) for rid in rids]
    jobs = []
    for rid, row in zip(rids, rows):
        jobs.append({"run_id": rid, "model_config": json.loads(row["model_config"]),
                     "train_config": json.loads(row["train_config"]), "predictions": str(predictions_path(store.dir, rid)),
                     "checkpoint": str(Path(checkpoint_dir) / f"{rid}.safetensors") if checkpoint_dir is not None else None})

    def emit(rid, ev):
        apply_event(store, rid, ev)
        if on_progress:
            on_progress(rid, ev)

    try:
        for rid, row, job in zip(rids, rows, jobs):
            store.update(rid, status="running", started=time.time(), pid=os.getpid(), owner=owner_id())
            if row["params"] is None:
                params, macs = cost(ModelConfig.from_dict(job["model_config"]))
                store.update(rid, params=params, macs=macs)
        try:
            out = run_group(jobs, emit, should_stop, data, fuse)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - the group itself failed (its data, its device): every run records why
            out = dict.fromkeys(rids, e)
        for rid in rids:
            res = out[rid]
            if isinstance(res, Cancelled):
                _finish_quietly(store, rid, "cancelled", "cancelled by the user")
            elif isinstance(res, BaseException):
                _finish_quietly(store, rid, "failed", failure_message(res))
                _free_device_memory()
            else:
                finish(store, rid, "done", res)
    except KeyboardInterrupt:
        for rid in rids:
            with contextlib.suppress(StoreError):
                if store.get(rid)["status"] in ACTIVE:
                    _finish_quietly(store, rid, "interrupted", "interrupted (Ctrl-C)")
        raise
    except StoreError as e:  # the store itself is failing: report the runs from what we know
        return [{**row, "status": "failed", "message": failure_message(e)} for row in rows]
    try:
        return [store.get(rid) for rid in rids]
    except StoreError as e:
        return [{**row, "status": "failed", "message": failure_message(e)} for row in rows]


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
                 threads: int = 0, fuse: str = "auto"):
        self.store = store
        self.concurrency = concurrency or auto_concurrency()
        self.threads, self.fuse = threads, fuse
        self.checkpoint_dir = Path(checkpoint_dir if checkpoint_dir is not None else store.dir / "checkpoints")
        self._q: queue.Queue[tuple[str, ...]] = queue.Queue()
        self._lock = threading.Lock()
        self._live: dict[str, dict] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._group: dict[str, tuple[str, ...]] = {}
        self._cancel: set[str] = set()
        self._threads: list[threading.Thread] = []
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

    def submit(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "", batch: str = "") -> str:
        return self.submit_many([(model_cfg, train_cfg)], tag, batch)[0]

    def submit_many(self, runs: list[tuple[ModelConfig, TrainConfig]], tag: str = "", batch: str = "",
                    fuse: str | None = None) -> list[str]:
        """Queue runs together: all are known as queued before the first starts, so each gets its share of
        the cores from the start. Runs that differ only in seed form one group, trained in one worker (fused
        where fuse_decision says so); a group takes one slot, as one run of K times the work. With `auto`, seeds
        are grouped only on a GPU: on CPUs, separate runs side by side beat fused ones (docs/bench-fused.txt),
        and a group that the probe decides not to fuse would train its seeds one after another in one slot."""
        from mscompare.fused import group_key
        from mscompare.train import resolve_device

        fuse = fuse or self.fuse
        ids, groups = [], {}
        for cfg, train_cfg in runs:
            params, macs = cost(cfg)
            rid = self.store.create(cfg, train_cfg, tag, batch, params=params, macs=macs)
            with self._lock:
                self._live[rid] = {"status": "queued", "iter": 0, "iters": train_cfg.iters}
            ids.append(rid)
            grouped = fuse == "on" or (fuse == "auto" and resolve_device(train_cfg.device).type == "cuda")
            key = group_key(cfg, train_cfg) if grouped else rid
            groups.setdefault(key, ([], (macs or params) * train_cfg.iters))[0].append(rid)
        work = {tuple(g): w * len(g) for g, w in groups.values()}
        for g in sorted(work, key=lambda g: -work[g]):  # the longest first: a short run ends the batch, not a long one
            with self._lock:
                for rid in g:
                    self._group[rid] = g
            self._q.put((fuse, g))
        return ids

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
        if queued:
            finish(self.store, rid, "cancelled", message="cancelled before it started")
        elif proc is not None and not whole:
            with contextlib.suppress(OSError, ValueError):  # the worker has just ended
                proc.stdin.write(f"cancel {rid}\n")
                proc.stdin.flush()
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
                ended = dict.fromkeys(rids, ("failed", failure_message(e)))
            for rid in rids:
                try:
                    status, message = ended.get(rid, ("failed", "the worker ended without a result"))
                    if self.store.get(rid)["status"] in ACTIVE:
                        finish(self.store, rid, status, message=message)
                    row = self.store.get(rid)
                    self._set(rid, status=row["status"], message=row["message"], test_acc=row["test_acc"])
                except Exception as e:  # noqa: BLE001 - e.g. the store is unwritable: show it live
                    self._set(rid, status="failed", message=failure_message(e))

    def _on_gpu(self, rid: str) -> bool:
        from mscompare.train import resolve_device

        return resolve_device(json.loads(self.store.get(rid)["train_config"]).get("device", "auto")).type == "cuda"

    def _run_in_worker(self, rids: list[str], fuse: str) -> dict[str, tuple[str, str]]:
        """Train `rids` (one group) in a fresh worker process; (status, message) of each run the worker didn't
        finish itself."""
        rows = {rid: self.store.get(rid) for rid in rids}
        tcfg = json.loads(rows[rids[0]]["train_config"])
        with self._lock:  # groups that will share the cores with this one: each gets its share, a lone one all
            sharing = len({self._group.get(r, (r,)) for r, v in self._live.items() if v.get("status") in ACTIVE})
        pol = policy(self.threads or tcfg.get("threads", 0), max(1, min(self.concurrency, sharing)))
        runs = [{"run_id": rid, "model_config": json.loads(rows[rid]["model_config"]),
                 "train_config": json.loads(rows[rid]["train_config"]),
                 "checkpoint": str(self.checkpoint_dir / f"{rid}.safetensors"),
                 "predictions": str(predictions_path(self.store.dir, rid))} for rid in rids]
        job = {"runs": runs, "fuse": fuse, "policy": pol, "nice": process_nice()}
        for rid in rids:
            self.store.update(rid, status="running", started=time.time())
        errlog = tempfile.TemporaryFile("w+")  # a file, so a chatty worker can't fill a pipe and block
        proc = subprocess.Popen([sys.executable, "-m", "mscompare.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errlog, text=True, env=worker_env(pol))
        with self._lock:
            for rid in rids:
                self._procs[rid] = proc
            early = [rid for rid in rids if rid in self._cancel]
        ended: dict[str, tuple[str, str]] = {}
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            for rid in early:
                self.cancel(rid)
            try:
                for line in proc.stdout:
                    ev = json.loads(line)
                    rid = ev.pop("run_id")
                    if ev.get("event") == "progress":
                        apply_event(self.store, rid, ev)
                        self._set(rid, **{k: v for k, v in ev.items() if k != "event"})
                    elif ev["event"] == "done":
                        finish(self.store, rid, "done", ev["result"])
                        ended[rid] = ("done", "")
                    else:  # cancelled or failed, maybe while the rest of its group trains on: settle it now
                        ended[rid] = (ev["event"], ev.get("message", ""))
                        finish(self.store, rid, *ended[rid][:1], message=ended[rid][1])
                        self._set(rid, status=ev["event"], message=ended[rid][1])
            except BaseException:  # e.g. the store can't be written: stop the worker, then report the runs failed
                _signal(proc, signal.SIGKILL)
                proc.wait()
                raise
            code = proc.wait()
            errlog.seek(0)
            err = errlog.read()[-4000:]
        finally:
            errlog.close()
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            with self._lock:
                for rid in rids:
                    self._procs.pop(rid, None)
        tail = err.strip().splitlines()[-1] if err.strip() else ""
        for rid in rids:
            if rid in ended:
                continue
            if rid in self._cancel:
                ended[rid] = ("cancelled", "cancelled by the user (the worker was stopped)")
            else:
                ended[rid] = ("failed", f"the worker process died (exit code {code}){': ' + tail if tail else ''}")
        return ended


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
