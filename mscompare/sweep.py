"""Sweeps: a grid of trials, run resumably through an executor (local worker processes, or Ray tasks)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mscompare import lifecycle
from mscompare.config import TrainConfig, config_for, preset
from mscompare.datasets import DATASETS
from mscompare.events import RunEnd
from mscompare.lifecycle import Executor
from mscompare.models import ModelConfig
from mscompare.runs import ACTIVE, RunStore

EXECUTORS = ("local", "ray")
RETRIES = 1  # a failed trial is tried once more before it is recorded as failed


@dataclass(frozen=True)
class Trial:
    model_config: ModelConfig
    train_config: TrainConfig


def protocol_key(model_config: dict, train_config: dict, device: str) -> str:
    """What makes two runs the same experiment: the model, the protocol and the device type. Threads, the data
    root's spelling and fields added since a run was stored (filled with their defaults) don't count."""
    m = ModelConfig.from_dict(model_config).to_dict()
    t = {k: v for k, v in TrainConfig.from_dict(train_config).to_dict().items()
         if k not in ("threads", "device", "data_root")}
    return json.dumps([m, t, device], sort_keys=True)


def device_type(device: str) -> str:
    from mscompare.train import resolve_device

    return resolve_device(device).type


def ran_on(row: dict) -> str:
    return (json.loads(row["env"] or "{}").get("device") or "cpu").split(":")[0]


def grid(models: list[str], datasets: list[str], widths: list[int], units: list[int] | None = None,
         seeds: int = 1, preset_name: str = "paper", iters: int | None = None, data_root: str = "data",
         device: str = "auto") -> list[Trial]:
    """Every model x dataset x width x units x seed. `units` None takes the paper's count per model and dataset."""
    out = []
    for seed in range(seeds):
        for ds in datasets:
            if ds not in DATASETS:
                raise ValueError(f"sweeps run on the built-in datasets ({', '.join(DATASETS)}); got {ds!r}")
            for w in widths:
                for u in units or [None]:
                    for m in models:
                        tcfg = preset(preset_name, ds, iters=iters, seed=seed, data_root=data_root, device=device)
                        out.append(Trial(config_for(m, ds, units=u, width=w), tcfg))
    return out


def finished_runs(store: RunStore, trials: list[Trial]) -> list[dict | None]:
    """Per trial, a finished run in `store` of the same protocol on the same device type (any tag), or None."""
    done = {protocol_key(json.loads(r["model_config"]), json.loads(r["train_config"]), ran_on(r)): r
            for r in store.list(status="done")}
    return [done.get(protocol_key(t.model_config.to_dict(), t.train_config.to_dict(),
                                  device_type(t.train_config.device))) for t in trials]


def executor_for(name: str, store: RunStore, checkpoint_dir: Path, workers: int = 0,
                 ray_address: str = "auto") -> Executor:
    """The sweep executor named `name`: `local` worker processes (`workers` at a time, default the thread
    policy's concurrency) or `ray` tasks."""
    if name == "ray":
        from mscompare.ray_exec import RayExecutor

        return RayExecutor(store, checkpoint_dir, ray_address, workers)
    from mscompare.manager import RunManager

    return RunManager(store, concurrency=workers, checkpoint_dir=checkpoint_dir)


def run_trials(store: RunStore, trials: Iterable[Trial], tag: str, executor: str = "local", workers: int = 0,
               ray_address: str = "auto", on_result: Callable[[dict], None] | None = None,
               checkpoint_dir: str | Path | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Run every trial not already finished in `store` (same protocol_key, same device type) through the
    executor named `executor`; a failed trial is tried RETRIES more times, each try its own run. `on_result`
    gets one record per trial as it ends. Returns {"done", "failed", "skipped", "ids"}. Ctrl-C (or
    should_stop) stops what is left: those trials end as interrupted (a run a user cancelled stays cancelled)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    trials = list(trials)
    ids: list[str | None] = [None] * len(trials)
    todo: dict[int, Trial] = {}
    for i, (t, row) in enumerate(zip(trials, finished_runs(store, trials))):
        if row is not None:
            ids[i] = row["id"]
        else:
            todo[i] = t
    counts = {"done": 0, "failed": 0, "skipped": len(trials) - len(todo)}
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else store.dir / "checkpoints"
    ex = executor_for(executor, store, ckdir, workers, ray_address)
    pending = {lifecycle.create(store, t.model_config, t.train_config, tag): (i, t, RETRIES) for i, t in todo.items()}
    ex.submit(list(pending))
    polled, cancelled = time.time(), set()
    try:
        while pending:
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            if time.time() - polled > 1.0:  # a run cancelled in the store by another page or process: stop it here
                polled = time.time()
                for row in store.list(tag=tag, status="cancelled"):
                    if row["id"] in pending and row["id"] not in cancelled:
                        cancelled.add(row["id"])
                        ex.cancel(row["id"])
            for e in ex.ended(timeout=0.2):
                if e.run_id not in pending:
                    continue
                i, t, left = pending.pop(e.run_id)
                if e.status == "failed" and left > 0:
                    store.update(e.run_id, message=f"retried: {e.message}"[:2000])
                    again = lifecycle.create(store, t.model_config, t.train_config, tag)
                    pending[again] = (i, t, left - 1)
                    ex.submit([again])
                    continue
                ids[i] = e.run_id
                counts["done" if e.status == "done" else "failed"] += 1
                if on_result:
                    on_result(record(store.get(e.run_id)))
    except KeyboardInterrupt:
        by_user = {r["id"] for r in store.list(tag=tag, status="cancelled")}
        for rid in pending:
            ex.cancel(rid)
        ex.close(timeout=30)
        for rid in pending:  # stopped by the sweep, not by a user's cancel: interrupted, as documented
            if rid not in by_user and store.get(rid)["status"] in (*ACTIVE, "cancelled"):
                lifecycle.end(store, RunEnd(rid, "interrupted", "the sweep was stopped"))
        raise
    finally:
        ex.close()
    return {**counts, "ids": ids}


def record(row: dict) -> dict:
    """One finished trial as the sweep's JSON line."""
    m = json.loads(row["model_config"])
    return {"run_id": row["id"], "model": row["model"], "dataset": row["dataset"], "width": m["width"],
            "units": m["units"], "seed": row["seed"], "status": row["status"], "test_acc": row["test_acc"],
            "params": row["params"], "macs": row["macs"], "seconds": row["seconds"], "message": row["message"] or ""}


