"""Sweeps: a grid of trials, run resumably through an executor (local worker processes, or Ray tasks)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mscompare import predictions
from mscompare.config import TrainConfig, config_for, preset
from mscompare.datasets import DATASETS
from mscompare.jobs import RunManager, cost, finish
from mscompare.models import ModelConfig
from mscompare.runs import ACTIVE, RunStore

EXECUTORS = ("local", "ray")
RETRIES = 1  # a failed trial is tried once more before it is recorded as failed
GCS_WAIT = "RAY_gcs_server_port_wait_time_s"  # how many times Ray tries to reach a cluster's GCS
RAY_LOG_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] ")  # Ray's C++ log lines


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


def run_trials(store: RunStore, trials: Iterable[Trial], tag: str, executor: str = "local", workers: int = 0,
               ray_address: str = "auto", on_result: Callable[[dict], None] | None = None,
               checkpoint_dir: str | Path | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Run every trial not already finished in `store` (same protocol_key, same device type); retry a failure
    once. `on_result` gets one record per trial as it ends. Returns {"done", "failed", "skipped", "ids"}.
    Ctrl-C (or should_stop) cancels what is left: unfinished trials end as interrupted or cancelled."""
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

    def ended(i: int, rid: str) -> None:
        ids[i] = rid
        row = store.get(rid)
        counts["done" if row["status"] == "done" else "failed"] += 1
        if on_result:
            on_result(record(row))

    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else store.dir / "checkpoints"
    run = _run_ray if executor == "ray" else _run_local
    run(store, todo, tag, workers, ckdir, ray_address, should_stop, ended)
    return {**counts, "ids": ids}


def record(row: dict) -> dict:
    """One finished trial as the sweep's JSON line."""
    m = json.loads(row["model_config"])
    return {"run_id": row["id"], "model": row["model"], "dataset": row["dataset"], "width": m["width"],
            "units": m["units"], "seed": row["seed"], "status": row["status"], "test_acc": row["test_acc"],
            "params": row["params"], "macs": row["macs"], "seconds": row["seconds"], "message": row["message"] or ""}


def _create(store: RunStore, t: Trial, tag: str) -> str:
    params, macs = cost(t.model_config)
    return store.create(t.model_config, t.train_config, tag, params=params, macs=macs)


def _run_local(store, todo, tag, workers, ckdir, _address, should_stop, ended):
    """Worker processes on this machine, `workers` at a time (default: the thread policy's concurrency)."""
    mgr = RunManager(store, concurrency=workers, checkpoint_dir=ckdir)
    ids = mgr.submit_many([(t.model_config, t.train_config) for t in todo.values()], tag)
    pending = {rid: (i, t, RETRIES) for rid, (i, t) in zip(ids, todo.items())}
    polled = time.time()
    try:
        while pending:
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            if time.time() - polled > 1.0:  # a run cancelled in the store by another page or process: stop it here
                polled = time.time()
                for row in store.list(tag=tag, status="cancelled"):
                    if row["id"] in pending and mgr.snapshot(row["id"]).get("status") in ACTIVE:
                        mgr.cancel(row["id"])
            for rid, snap in mgr.snapshots().items():
                if rid not in pending or snap.get("status") in ACTIVE:
                    continue
                i, t, left = pending.pop(rid)
                if snap["status"] == "failed" and left > 0:
                    store.update(rid, message=f"retried: {snap.get('message', '')}"[:2000])
                    pending[mgr.submit(t.model_config, t.train_config, tag)] = (i, t, left - 1)
                else:
                    ended(i, rid)
            time.sleep(0.2)
    except KeyboardInterrupt:
        by_user = {r["id"] for r in store.list(tag=tag, status="cancelled")}
        for rid in pending:
            mgr.cancel(rid)
        mgr.wait(timeout=30)
        for rid in pending:  # stopped by the sweep, not by a user's cancel: interrupted, as documented
            if rid not in by_user and store.get(rid)["status"] in (*ACTIVE, "cancelled"):
                finish(store, rid, "interrupted", message="the sweep was stopped")
        raise


def _ray_trial(job: dict) -> dict:
    """Runs on a Ray worker: the trial, its eval points and its checkpoint's bytes come back to the driver."""
    import tempfile

    from mscompare.jobs import run_trial
    from mscompare.threads import configure_process, policy

    configure_process(policy(1))
    points: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        ck, preds = str(Path(tmp) / "model.safetensors"), str(Path(tmp) / "predictions.npz")
        res = run_trial(ModelConfig.from_dict(job["model_config"]), TrainConfig.from_dict(job["train_config"]), ck,
                        lambda ev: points.append(ev) if ev.get("kind") == "eval" else None, run_id=job["run_id"],
                        predictions=preds)
        res["checkpoint_bytes"] = Path(ck).read_bytes()
        res["predictions_bytes"] = Path(preds).read_bytes()
    res["points"] = points
    return res


def _ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT or ray://HOST:PORT address, or None when it names no port."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    return (host.strip("[]"), int(port)) if sep and host and port.isdigit() else None


def _reach(address: str, timeout: float = 5.0) -> None:
    """A ValueError in seconds when nothing accepts connections at the address (Ray itself retries for minutes)."""
    endpoint = _ray_endpoint(address)
    if endpoint is None:
        return  # Ray says what is wrong with the address
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one there (ray start "
                         f"--head --port={endpoint[1]}), or set the Ray address (--ray-address, "
                         f"$MSCOMPARE_RAY_ADDRESS) to auto to run a local one") from e


@contextlib.contextmanager
def _one_gcs_attempt():
    """Ray tries to reach a cluster's GCS 20 times, ~40 s each when something other than Ray answers: try once
    (unless RAY_gcs_server_port_wait_time_s is set already)."""
    was_set = GCS_WAIT in os.environ
    os.environ.setdefault(GCS_WAIT, "1")
    try:
        yield
    finally:
        if not was_set:
            os.environ.pop(GCS_WAIT, None)


@contextlib.contextmanager
def _ray_logs_held():
    """Hold back what reaches file descriptor 2, where Ray's C++ core logs past Python's logging; pass it all on
    if the block succeeds, and all but Ray's own log lines if it fails."""
    sys.stderr.flush()
    saved, failed = os.dup(2), True
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not (failed and RAY_LOG_LINE.match(line))]
            with open(2, "wb", closefd=False) as err:
                err.write(b"".join(kept))


def _reason(e: BaseException) -> str:
    """The last line of the innermost cause: Ray wraps the reason (a wrong auth token, a timeout) in a
    ConnectionError that only names the address."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    return last if len(last) <= 600 else last[:600] + "..."


def _join_ray(address: str, runtime_env: dict) -> None:
    """Join the Ray cluster at HOST:PORT (or ray://HOST:PORT), or fail with a one-line ValueError naming the
    address: in seconds when nothing listens there, in under a minute when something else does."""
    import ray

    _reach(address)
    try:
        with _one_gcs_attempt(), _ray_logs_held():
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as e:  # noqa: BLE001 - ConnectionError, a version mismatch, a bad address: all one line
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise ValueError(f"can't join a Ray cluster at {address} (a Ray head's HOST:PORT, as ray start --head "
                         f"prints it): {_reason(e)}") from e


def _run_ray(store, todo, tag, workers, ckdir, address, should_stop, ended):
    """Each trial as a Ray task asking for one CPU (and one GPU where the trial trains on CUDA)."""
    import ray

    from mscompare.jobs import failure_message

    if not ray.is_initialized():
        env = {"env_vars": {"OMP_NUM_THREADS": "1"}}  # workers import the installed package (pip install -e .)
        if address == "auto":
            try:
                ray.init(address="auto", runtime_env=env, log_to_driver=False)
            except ConnectionError:  # no cluster running: start a local one
                ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False,
                         num_cpus=workers or None)
        else:
            _join_ray(address, env)
    refs = {}
    for i, t in todo.items():
        rid = _create(store, t, tag)
        gpus = 1 if device_type(t.train_config.device) == "cuda" else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=True)(_ray_trial)
        store.update(rid, status="running", started=time.time())
        refs[task.remote({"run_id": rid, "model_config": t.model_config.to_dict(),
                          "train_config": t.train_config.to_dict()})] = (i, rid)
    try:
        while refs:
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                i, rid = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task failed twice (or its worker died twice)
                    cause = getattr(e, "cause", None) or e
                    finish(store, rid, "failed", message=f"failed after a retry: {failure_message(cause)}")
                else:
                    for p in res.pop("points"):
                        store.add_point(rid, p["iter"], p["test_acc"], p["loss"], p["images_per_s"])
                    ck = ckdir / f"{rid}.safetensors"
                    ck.parent.mkdir(parents=True, exist_ok=True)
                    ck.write_bytes(res.pop("checkpoint_bytes"))
                    predictions.save(predictions.path_for(store.dir, rid),
                                     predictions.Predictions.from_bytes(res.pop("predictions_bytes")))
                    finish(store, rid, "done", {**res, "checkpoint": str(ck)})
                ended(i, rid)
    except KeyboardInterrupt:
        for ref, (_, rid) in refs.items():
            ray.cancel(ref, force=True)
            finish(store, rid, "interrupted", message="the sweep was stopped")
        raise
