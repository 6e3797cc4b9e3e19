"""A stored run's one path, create -> start -> record -> end, and the Executor interface every place a run
trains implements: this process (jobs.InProcess), worker processes (manager.RunManager), Ray (ray_exec.RayExecutor)."""
from __future__ import annotations

import os
import time
from typing import Protocol

from mscompare.config import TrainConfig
from mscompare.events import Progress, RunEnd, RunResult
from mscompare.models import ModelConfig
from mscompare.runs import ACTIVE, RunStore, StoreError, owner_id


class Executor(Protocol):
    """Trains stored runs (created with `create`): each ends through `end`, and `ended` hands out its RunEnd."""

    def submit(self, rids: list[str], fuse: str = "auto") -> None:
        """Train these stored runs; runs that differ only in seed may be trained as one group."""

    def cancel(self, rid: str) -> None:
        """Stop one run (queued: at once; training: within seconds); it ends as cancelled."""

    def ended(self, timeout: float = 0.0) -> list[RunEnd]:
        """The runs that ended since the last call, waiting up to `timeout` seconds for the first."""

    def close(self, timeout: float = 30.0) -> None:
        """Wait up to `timeout` seconds for what still trains, then let go of workers and connections."""


def cost(mcfg: ModelConfig) -> tuple[int, int | None]:
    """Params (always) and MACs (None where fvcore is missing), known before training starts."""
    from mscompare.models import build_model, count_params

    try:
        from mscompare.profile import cached_profile
    except ImportError:
        return count_params(build_model(mcfg)), None
    p = cached_profile(mcfg)
    return p.params, p.macs


def create(store: RunStore, mcfg: ModelConfig, tcfg: TrainConfig, tag: str = "", batch: str = "") -> str:
    """A queued run in the store, with its params and MACs; its id."""
    params, macs = cost(mcfg)
    return store.create(mcfg, tcfg, tag, batch, params=params, macs=macs)


def start(store: RunStore, rid: str) -> None:
    """The run trains now, owned by this process (which settles it if its trainer dies)."""
    store.update(rid, status="running", started=time.time(), pid=os.getpid(), owner=owner_id())


def record(store: RunStore, rid: str, p: Progress) -> None:
    """One progress event: eval points go into the run's curve; steps are live-only."""
    if p.is_eval:
        store.add_point(rid, p.iter, p.test_acc, p.loss, p.images_per_s)


def end(store: RunStore, e: RunEnd, only_active: bool = False) -> None:
    """Record how a run ended (with `only_active`, unless it has ended already)."""
    if only_active and store.get(e.run_id)["status"] not in ACTIVE:
        return
    fields = {"status": e.status, "finished": time.time(),
              "message": e.message or (e.result.message if e.result else "")}
    if e.result is not None:
        r = e.result
        fields.update(test_acc=r.test_acc, seconds=r.seconds, images_per_s=r.images_per_s, env=r.env,
                      evaluation=r.evaluation, checkpoint=r.checkpoint)
    store.update(e.run_id, **fields)


def end_quietly(store: RunStore, e: RunEnd) -> None:
    """`end`, where a failing store is reported by the caller reading the run back."""
    try:
        end(store, e)
    except StoreError:
        pass


def outcome(rid: str, res: RunResult | BaseException) -> RunEnd:
    """A run's RunEnd from what training gave: its result, a cancel, or the exception that ended it."""
    from mscompare.train import Cancelled

    if isinstance(res, Cancelled):
        return RunEnd(rid, "cancelled", "cancelled by the user")
    if isinstance(res, BaseException):
        return RunEnd(rid, "failed", failure_message(res))
    return RunEnd(rid, "done", result=res)


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
