"""Sweeps as records beside the run store: each sweep's id, settings, owner process and progress in
`<runs_dir>/sweeps/<id>.json`, so any tab, a reloaded page or a restarted server lists it, cancels it, and reads
a sweep whose process died as interrupted."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from mscompare.runs import ACTIVE, RunStore, owner_alive, owner_id

ENDED = ("done", "cancelled", "failed", "interrupted")


def new_sweep_id() -> str:
    return time.strftime("sweep-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


class SweepLog:
    """The sweeps of one run store. Records are small JSON files replaced atomically; a cancel request is a
    `<id>.stop` file, so a sweep in another process (another server, the CLI) sees it too."""

    def __init__(self, store: RunStore):
        self.store = store
        self.dir = Path(store.dir) / "sweeps"

    def _path(self, sid: str, ext: str = "json") -> Path:
        if not sid or "/" in sid or sid.startswith("."):
            raise ValueError(f"not a sweep id: {sid!r}")
        return self.dir / f"{sid}.{ext}"

    def _write(self, rec: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(rec["id"], f"json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, self._path(rec["id"]))

    def create(self, request: dict, total: int, skipped: int, executor: str, sid: str | None = None) -> dict:
        """Record a sweep this process is about to run: its settings, trial count and those already done."""
        rec = {"id": sid or new_sweep_id(), "created": time.time(), "owner": owner_id(), "request": request,
               "executor": executor, "total": total, "skipped": skipped, "state": "running", "error": "",
               "ended": None}
        self._write(rec)
        return rec

    def finish(self, sid: str, state: str, error: str = "") -> None:
        rec = self._read(sid)
        if rec is not None:
            self._write({**rec, "state": state, "error": error, "ended": time.time()})

    def cancel(self, sid: str) -> None:
        """Ask the sweep to stop, wherever it runs; it cancels what is left and ends as cancelled."""
        if self._read(sid) is None:
            raise ValueError(f"no sweep {sid!r}")
        self._path(sid, "stop").touch()

    def stop_requested(self, sid: str) -> bool:
        return self._path(sid, "stop").exists()

    def _read(self, sid: str) -> dict | None:
        try:
            return json.loads(self._path(sid).read_text())
        except (OSError, ValueError):
            return None

    def get(self, sid: str) -> dict | None:
        """One sweep with its progress from the run store: runs done / failed / cancelled / active of its tag,
        `state` interrupted where it was running but its process is gone."""
        rec = self._read(sid)
        if rec is None:
            return None
        counts: dict[str, int] = {}
        for r in self.store.list(tag=sid):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        if rec["state"] == "running" and not owner_alive(rec["owner"]):
            rec["state"] = "interrupted"
            rec["error"] = rec["error"] or "the process running it stopped"
        ended = sum(n for s, n in counts.items() if s not in ACTIVE)
        rec.update(counts=counts, active=sum(counts.get(s, 0) for s in ACTIVE),
                   finished=min(rec["total"], rec["skipped"] + ended), running=rec["state"] == "running",
                   cancelling=rec["state"] == "running" and self.stop_requested(sid))
        return rec

    def list(self) -> list[dict]:
        """Every sweep of this store, newest first."""
        if not self.dir.is_dir():
            return []
        recs = [self.get(p.stem) for p in self.dir.glob("*.json")]
        return sorted((r for r in recs if r), key=lambda r: r["created"], reverse=True)


def describe(rec: dict) -> str:
    """One line: what the sweep trains and how far it is."""
    q = rec.get("request") or {}
    n_models = len(q.get("models", []))
    what = (f"{n_models} model{'s' if n_models != 1 else ''} × {', '.join(q.get('datasets', []))} × widths "
            f"{', '.join(str(w) for w in q.get('widths', []))} × {q.get('seeds', 1)} seed"
            f"{'s' if q.get('seeds', 1) != 1 else ''}, {q.get('preset', '')}")
    c = rec.get("counts", {})
    bits = [f"{rec['finished']} of {rec['total']} trials ended"]
    if rec["skipped"]:
        bits.append(f"{rec['skipped']} already done")
    bits += [f"{c[s]} {s}" for s in ("done", "failed", "cancelled", "interrupted") if c.get(s)]
    if rec["active"] and rec["running"]:
        bits.append(f"{rec['active']} training or queued")
    state = "cancelling" if rec.get("cancelling") else rec["state"]
    return f"{rec['id']} ({rec['executor']}, {state}): {what}. " + ", ".join(bits) + (
        f". {rec['error']}" if rec.get("error") else "")
