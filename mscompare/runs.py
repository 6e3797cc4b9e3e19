"""The run store (SQLite: configs, status, live curve, results) and the background run manager."""
from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
import traceback
import uuid
from contextlib import closing
from pathlib import Path

from mscompare.config import ModelConfig
from mscompare.train import Cancelled, TrainConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, created REAL, started REAL, finished REAL, status TEXT, message TEXT,
  model TEXT, dataset TEXT, preset TEXT, seed INTEGER, iters INTEGER, tag TEXT,
  model_config TEXT, train_config TEXT, env TEXT, pid INTEGER,
  test_acc REAL, params INTEGER, macs INTEGER, seconds REAL, images_per_s REAL, checkpoint TEXT);
CREATE TABLE IF NOT EXISTS points (
  run_id TEXT, iter INTEGER, test_acc REAL, loss REAL, images_per_s REAL, t REAL,
  PRIMARY KEY (run_id, iter));
"""
ACTIVE = ("queued", "running")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class RunStore:
    """Every run, kept in `<runs_dir>/runs.sqlite`. Safe to use from several threads and processes."""

    def __init__(self, runs_dir: str | Path = "runs"):
        self.dir = Path(runs_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "runs.sqlite"
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)
        self.recover()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _exec(self, sql: str, args=()) -> None:
        with closing(self._connect()) as db, db:
            db.execute(sql, args)

    def _query(self, sql: str, args=()) -> list[dict]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute(sql, args)]

    def recover(self) -> int:
        """Mark runs whose owning process is gone as interrupted; their curve so far is kept."""
        stale = [r["id"] for r in self._query("SELECT id, pid FROM runs WHERE status IN ('queued','running')")
                 if not _alive(r["pid"])]
        for rid in stale:
            self._exec("UPDATE runs SET status='interrupted', message='the process running it stopped', "
                       "finished=? WHERE id=?", (time.time(), rid))
        return len(stale)

    def create(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "") -> str:
        rid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._exec("INSERT INTO runs (id, created, status, model, dataset, preset, seed, iters, tag, model_config,"
                   " train_config, pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (rid, time.time(), "queued", model_cfg.model, train_cfg.dataset, train_cfg.preset, train_cfg.seed,
                    train_cfg.iters, tag, json.dumps(model_cfg.to_dict()), json.dumps(train_cfg.__dict__),
                    os.getpid()))
        return rid

    def update(self, rid: str, **fields) -> None:
        fields = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), rid))

    def add_point(self, rid: str, it: int, test_acc: float, loss: float, images_per_s: float) -> None:
        self._exec("INSERT OR REPLACE INTO points VALUES (?,?,?,?,?,?)",
                   (rid, it, test_acc, loss, images_per_s, time.time()))

    def get(self, rid: str) -> dict | None:
        rows = self._query("SELECT * FROM runs WHERE id=?", (rid,))
        return rows[0] if rows else None

    def list(self, **where) -> list[dict]:
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(f"{k}=?" for k in where)
        return self._query(sql + " ORDER BY created", tuple(where.values()))

    def curve(self, rid: str) -> list[dict]:
        return self._query("SELECT iter, test_acc, loss, images_per_s FROM points WHERE run_id=? ORDER BY iter",
                           (rid,))

    def curves(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self._query(f"SELECT run_id, iter, test_acc, loss FROM points WHERE run_id IN ({marks}) "
                           "ORDER BY run_id, iter", tuple(ids))


def execute(store: RunStore, rid: str, checkpoint_dir: str | Path | None = None, *, data=None,
            on_progress=None, should_stop=None) -> dict:
    """Run one stored run to the end, recording every point; the status says how it ended. Never raises."""
    from mscompare.checkpoints import save_checkpoint
    from mscompare.data import load_dataset
    from mscompare.profile import profile_model
    from mscompare.train import TrainingError, train

    row = store.get(rid)
    mcfg = ModelConfig.from_dict(json.loads(row["model_config"]))
    tcfg = TrainConfig.from_dict(json.loads(row["train_config"]))
    store.update(rid, status="running", started=time.time(), pid=os.getpid())

    def progress(snap):
        store.add_point(rid, snap["iter"], snap["test_acc"], snap["loss"], snap["images_per_s"])
        if on_progress:
            on_progress(snap)

    try:
        train_data, test_data = data or load_dataset(tcfg.dataset, tcfg.data_root)
        res = train(mcfg, tcfg, train_data, test_data, progress, should_stop)
        prof = profile_model(mcfg)
        ckpt = None
        if checkpoint_dir is not None:
            meta = {"classes": train_data.classes, "norm": res["norm"], "dataset": tcfg.dataset,
                    "iters": tcfg.iters, "test_acc": res["test_acc"], "run_id": rid, "preset": tcfg.preset,
                    "seed": tcfg.seed}
            ckpt = str(save_checkpoint(Path(checkpoint_dir) / f"{rid}.safetensors", res["model"], mcfg, meta))
        store.update(rid, status="done", finished=time.time(), test_acc=res["test_acc"], params=prof.params,
                     macs=prof.macs, seconds=res["seconds"], images_per_s=res["images_per_s"], env=res["env"],
                     checkpoint=ckpt, message="")
    except Cancelled:
        store.update(rid, status="cancelled", finished=time.time(), message="cancelled by the user")
    except MemoryError:
        store.update(rid, status="failed", finished=time.time(), message="out of memory; lower the batch size")
    except Exception as e:  # noqa: BLE001 - any failure becomes a visible status, never a dead thread
        msg = str(e) if isinstance(e, (TrainingError, RuntimeError, ValueError)) else repr(e)
        if "out of memory" in msg.lower():
            msg = "out of memory; lower the batch size or width. " + msg[:200]
        store.update(rid, status="failed", finished=time.time(), message=msg[:2000],
                     env={"traceback": traceback.format_exc()[-4000:]})
    return store.get(rid)


class RunManager:
    """A queue of runs trained by `concurrency` background threads; snapshots are safe to read anywhere."""

    def __init__(self, store: RunStore, concurrency: int = 1, checkpoint_dir: str | Path | None = None):
        self.store = store
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else store.dir / "checkpoints"
        self._q: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._live: dict[str, dict] = {}
        self._stop: dict[str, threading.Event] = {}
        self._data: dict[tuple[str, str], tuple] = {}  # decoded datasets, shared by runs on the same data
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"mscompare-run-{i}")
                         for i in range(concurrency)]
        for t in self._threads:
            t.start()

    def submit(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "") -> str:
        rid = self.store.create(model_cfg, train_cfg, tag)
        with self._lock:
            self._stop[rid] = threading.Event()
            self._live[rid] = {"status": "queued", "iter": 0, "iters": train_cfg.iters}
        self._q.put(rid)
        return rid

    def cancel(self, rid: str) -> None:
        with self._lock:
            ev = self._stop.get(rid)
            live = self._live.get(rid)
            if ev is not None:
                ev.set()
            if live is not None and live["status"] == "queued":
                live["status"] = "cancelled"
        if live is not None and live["status"] == "cancelled":
            self.store.update(rid, status="cancelled", finished=time.time(), message="cancelled before it started")

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
            self._live[rid].update(kw)

    def _dataset(self, rid: str):
        """The run's dataset, decoded once per manager; None lets execute() report a loading error."""
        from mscompare.data import DatasetError, load_dataset

        tcfg = json.loads(self.store.get(rid)["train_config"])
        key = (tcfg["dataset"], tcfg["data_root"])
        if key not in self._data:
            try:
                self._data[key] = load_dataset(*key)
            except DatasetError:
                return None
        return self._data[key]

    def _work(self) -> None:
        while True:
            rid = self._q.get()
            with self._lock:
                if self._live[rid]["status"] == "cancelled":
                    continue
                self._live[rid]["status"] = "running"
            stop = self._stop[rid]
            row = execute(self.store, rid, self.checkpoint_dir, data=self._dataset(rid),
                          on_progress=lambda s, r=rid: self._set(r, **s), should_stop=stop.is_set)
            self._set(rid, status=row["status"], message=row["message"], test_acc=row["test_acc"])
