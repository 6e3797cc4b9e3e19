"""The run store: every run's config, status, live curve and results in one SQLite file, safe across processes."""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

from mscompare.config import TrainConfig
from mscompare.models import ModelConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, created REAL, started REAL, finished REAL, status TEXT, message TEXT,
  model TEXT, dataset TEXT, preset TEXT, seed INTEGER, iters INTEGER, tag TEXT,
  model_config TEXT, train_config TEXT, env TEXT, pid INTEGER,
  test_acc REAL, params INTEGER, macs INTEGER, seconds REAL, images_per_s REAL, checkpoint TEXT,
  owner TEXT, batch TEXT, width INTEGER, units INTEGER, device TEXT, evaluation TEXT);
CREATE TABLE IF NOT EXISTS points (
  run_id TEXT, iter INTEGER, test_acc REAL, loss REAL, images_per_s REAL, t REAL,
  PRIMARY KEY (run_id, iter));
"""
# Columns added since the first schema: a store made before them gets them on open.
ADDED = {"owner": "TEXT", "batch": "TEXT", "width": "INTEGER", "units": "INTEGER", "device": "TEXT",
         "evaluation": "TEXT"}
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "interrupted")


def new_batch_id() -> str:
    """An id for runs started together (sortable by time, unique across processes)."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


class StoreError(RuntimeError):
    """The run store can't be opened or written; the message names the file and what to do."""


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), so a reused pid is not taken for the old one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid}:{process_start(pid) or '?'}"


def owner_alive(owner: str | None, pid: int | None = None) -> bool:
    """Is the process that owns a run still the same living process?"""
    if owner:
        spid, _, start = owner.partition(":")
        pid = int(spid)
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if owner and start != "?":
        return process_start(pid) == start
    return True


class RunStore:
    """Every run, kept in `<runs_dir>/runs.sqlite`. Safe to use from several threads and processes."""

    def __init__(self, runs_dir: str | Path = "runs"):
        self.dir = Path(runs_dir)
        self.path = self.dir / "runs.sqlite"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"can't create the runs folder {self.dir}: {e.strerror or e}") from e
        self._check_path()
        self._write_script(SCHEMA)
        have = {r["name"] for r in self._query("PRAGMA table_info(runs)")}
        for col, typ in ADDED.items():
            if col not in have:
                try:
                    self._exec(f"ALTER TABLE runs ADD COLUMN {col} {typ}")
                except StoreError as e:  # another process added it between our look and our write
                    if "duplicate column" not in str(e):
                        raise
        self.recover()

    def _check_path(self) -> None:
        """The store must be a regular file or not exist yet: SQLite can't open a folder and would block on a FIFO."""
        if self.path.exists() and not self.path.is_file():
            what = "a folder" if self.path.is_dir() else "not a regular file"
            raise StoreError(f"{self.path} is {what}, not a SQLite file; the run store is one file of that name. "
                             f"Move it aside (mv {self.path} {self.path}.old) or choose another runs folder "
                             f"(--runs-dir, $MSCOMPARE_RUNS_DIR) and a new, empty store is made there.")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _fail(self, e: sqlite3.Error) -> StoreError:
        if any(s in str(e) for s in ("not a database", "malformed", "file is encrypted")):
            return StoreError(f"{self.path} is not a readable SQLite run store ({e}). Move it aside "
                              f"(mv {self.path} {self.path}.bad) and a new, empty store is made on the next start.")
        hint = (" (is the disk full or the folder read-only?)"
                if any(s in str(e) for s in ("readonly", "read-only", "full", "unable to open", "I/O")) else "")
        return StoreError(f"can't write the run store {self.path}: {e}{hint}")

    def _write_script(self, sql: str) -> None:
        try:
            with closing(self._connect()) as db, db:
                db.executescript(sql)
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def _exec(self, sql: str, args=()) -> None:
        try:
            with closing(self._connect()) as db, db:
                db.execute(sql, args)
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def _query(self, sql: str, args=()) -> list[dict]:
        try:
            with closing(self._connect()) as db:
                return [dict(r) for r in db.execute(sql, args)]
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def recover(self) -> int:
        """Mark runs whose owning process is gone (or whose pid now names another process) as interrupted;
        their curve so far is kept."""
        rows = self._query("SELECT id, pid, owner FROM runs WHERE status IN ('queued','running')")
        stale = [r["id"] for r in rows if not owner_alive(r["owner"], r["pid"])]
        for rid in stale:
            self._exec("UPDATE runs SET status='interrupted', message='the process running it stopped', "
                       "finished=? WHERE id=?", (time.time(), rid))
        return len(stale)

    def create(self, model_cfg: ModelConfig, train_cfg: TrainConfig, tag: str = "", batch: str = "",
               params: int | None = None, macs: int | None = None) -> str:
        rid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._exec("INSERT INTO runs (id, created, status, model, dataset, preset, seed, iters, tag, model_config,"
                   " train_config, pid, owner, batch, width, units, device, params, macs)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (rid, time.time(), "queued", model_cfg.model, train_cfg.dataset, train_cfg.preset, train_cfg.seed,
                    train_cfg.iters, tag, json.dumps(model_cfg.to_dict()), json.dumps(train_cfg.to_dict()),
                    os.getpid(), owner_id(), batch, model_cfg.width, model_cfg.units, train_cfg.device,
                    params, macs))
        return rid

    def update(self, rid: str, **fields) -> None:
        fields = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), rid))

    def delete(self, rid: str) -> bool:
        """Remove a finished run: its row, its curve, its checkpoint, its predictions and robustness files. Active
        runs stay."""
        row = self.get(rid)
        if row is None:
            return False
        if row["status"] in ACTIVE:
            raise StoreError(f"run {rid} is {row['status']}; cancel it before deleting it")
        from mscompare.predictions import delete as delete_predictions
        from mscompare.robustness import delete as delete_robustness

        self._exec("DELETE FROM points WHERE run_id=?", (rid,))
        self._exec("DELETE FROM runs WHERE id=?", (rid,))
        if row.get("checkpoint") and Path(row["checkpoint"]).parent == self.dir / "checkpoints":
            Path(row["checkpoint"]).unlink(missing_ok=True)
        delete_predictions(self.dir, rid)
        delete_robustness(self.dir, rid)
        return True

    def add_point(self, rid: str, it: int, test_acc: float, loss: float, images_per_s: float) -> None:
        self._exec("INSERT OR REPLACE INTO points VALUES (?,?,?,?,?,?)",
                   (rid, it, test_acc, loss, images_per_s, time.time()))

    def get(self, rid: str) -> dict | None:
        rows = self._query("SELECT * FROM runs WHERE id=?", (rid,))
        return rows[0] if rows else None

    def list(self, ids: list[str] | None = None, **where) -> list[dict]:
        clauses, args = [f"{k}=?" for k in where], list(where.values())
        if ids is not None:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            args += list(ids)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return self._query(sql + " ORDER BY created", tuple(args))

    def batches(self, tag: str | None = None) -> list[dict]:
        """Batches of runs started together, newest first: id, when, how many runs, which models."""
        sql = ("SELECT batch, MIN(created) AS created, COUNT(*) AS runs, GROUP_CONCAT(model, ', ') AS models, "
               "MIN(dataset) AS dataset, MIN(preset) AS preset, "
               "MIN(COALESCE(json_extract(train_config, '$.precision'), 'fp32')) AS precision FROM runs WHERE batch IS NOT NULL AND batch != ''"
               + (" AND tag=?" if tag else "") + " GROUP BY batch ORDER BY created DESC")
        return self._query(sql, (tag,) if tag else ())

    def curve(self, rid: str) -> list[dict]:
        return self._query("SELECT iter, test_acc, loss, images_per_s FROM points WHERE run_id=? ORDER BY iter",
                           (rid,))

    def curves(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self._query(f"SELECT run_id, iter, test_acc, loss FROM points WHERE run_id IN ({marks}) "
                           "ORDER BY run_id, iter", tuple(ids))
