"""One run's work wherever it trains (load, train, save), a group's (fused or one by one), and the in-process executor."""
from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mscompare import lifecycle
from mscompare.config import TrainConfig
from mscompare.events import Progress, RunEnd, RunResult
from mscompare.models import ModelConfig
from mscompare.predictions import path_for as predictions_path
from mscompare.runs import ACTIVE, RunStore, StoreError


@dataclass(frozen=True)
class Job:
    """One stored run as a trainer gets it: its configs and where its checkpoint and predictions go."""
    run_id: str
    model_config: ModelConfig
    train_config: TrainConfig
    checkpoint: str | None = None
    predictions: str | None = None

    @classmethod
    def of(cls, store: RunStore, rid: str, checkpoint_dir: str | Path | None = None) -> Job:
        row = store.get(rid)
        return cls(rid, ModelConfig.from_dict(json.loads(row["model_config"])),
                   TrainConfig.from_dict(json.loads(row["train_config"])),
                   str(Path(checkpoint_dir) / f"{rid}.safetensors") if checkpoint_dir is not None else None,
                   str(predictions_path(store.dir, rid)))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "model_config": self.model_config.to_dict(),
                "train_config": self.train_config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(d["run_id"], ModelConfig.from_dict(d["model_config"]), TrainConfig.from_dict(d["train_config"]),
                   d.get("checkpoint"), d.get("predictions"))


def _load(tcfg: TrainConfig, data=None):
    from mscompare.data import load_dataset

    return data or load_dataset(tcfg.dataset, tcfg.data_root, skip_bad=tcfg.skip_bad, size=tcfg.image_size or None)


def _save(job: Job, res: dict, data, extra_env: dict | None = None) -> RunResult:
    """Save a trained run's checkpoint and per-image predictions; its RunResult."""
    from mscompare.checkpoints import save_checkpoint

    train_data, test_data = data
    tcfg = job.train_config
    if job.checkpoint:
        meta = {"classes": train_data.classes, "norm": res["norm"], "dataset": tcfg.dataset, "iters": tcfg.iters,
                "test_acc": res["test_acc"], "run_id": job.run_id, "preset": tcfg.preset, "seed": tcfg.seed}
        save_checkpoint(job.checkpoint, res["model"], job.model_config, meta)
    if job.predictions:
        from mscompare.predictions import save

        save(job.predictions, res["predictions"])
    skipped = len(train_data.skipped) + len(test_data.skipped)
    return RunResult(res["test_acc"], res["seconds"], res["images_per_s"],
                     {**res["env"], **(extra_env or {}), "skipped_files": skipped}, res["evaluation"], job.checkpoint,
                     f"skipped {skipped} bad file(s)" if skipped else "")


def _adapting(emit: Callable[[Progress], None]) -> Callable[[Progress], None]:
    from mscompare.threads import adapt

    def progress(ev: Progress) -> None:
        adapt(ev)  # on the training thread: the auto thread policy keeps the fastest thread count
        emit(ev)

    return progress


def train_job(job: Job, emit: Callable[[Progress], None], should_stop: Callable[[], bool] | None = None,
              data=None) -> RunResult:
    """Load the data, train, save the checkpoint and the per-image test predictions: the work of one run,
    wherever it runs. Raises on failure."""
    from mscompare.train import train

    data = _load(job.train_config, data)
    res = train(job.model_config, job.train_config, data[0], data[1], _adapting(emit), should_stop)
    return _save(job, res, data)


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


def train_jobs(jobs: list[Job], emit: Callable[[str, Progress], None],
              should_stop: Callable[[str], bool] | None = None, data=None, fuse: str = "auto",
              on_end: Callable[[str, BaseException], None] | None = None) -> dict[str, RunResult | BaseException]:
    """Train `jobs`: as one fused computation where they share architecture and protocol and fuse_decision says
    so, else one after another. Per run id: its RunResult, or the exception that ended it (the others go on);
    `on_end` hears at once of a fused run that ends early (cancelled or failed)."""
    from mscompare.fused import train_fused

    mcfgs, tcfgs = [j.model_config for j in jobs], [j.train_config for j in jobs]
    stop = should_stop or (lambda rid: False)
    fused, why = fuse_decision(mcfgs, tcfgs, fuse)
    out: dict[str, RunResult | BaseException] = {}
    if not fused:
        for j in jobs:
            try:
                res = train_job(j, lambda ev, r=j.run_id: emit(r, ev), lambda r=j.run_id: stop(r), data)
                out[j.run_id] = dataclasses.replace(res, env={**res.env, **why})
            except Exception as e:  # noqa: BLE001 - this run's failure; the next run still trains
                out[j.run_id] = e
        return out
    data = _load(tcfgs[0], data)
    ids = [j.run_id for j in jobs]
    results = train_fused(mcfgs[0], tcfgs, data[0], data[1],
                          [_adapting(lambda ev, r=rid: emit(r, ev)) if k == 0 else (lambda ev, r=rid: emit(r, ev))
                           for k, rid in enumerate(ids)], [lambda r=rid: stop(r) for rid in ids],
                          (lambda k, e: on_end(ids[k], e)) if on_end else None)
    for j, res in zip(jobs, results):
        try:
            out[j.run_id] = res if isinstance(res, BaseException) else _save(j, res, data, why)
        except Exception as e:  # noqa: BLE001 - e.g. the checkpoint can't be written: this run fails
            out[j.run_id] = e
    return out


class InProcess:
    """Executor: trains each submitted group in this process, at once (submit returns when the group ended).
    Never raises for a failed run; KeyboardInterrupt ends the unfinished runs as interrupted and is raised again."""

    def __init__(self, store: RunStore, checkpoint_dir: str | Path | None = None, *, data=None,
                 on_progress: Callable[[str, Progress], None] | None = None,
                 should_stop: Callable[[str], bool] | None = None):
        self.store, self.checkpoint_dir, self.data = store, checkpoint_dir, data
        self.on_progress, self.should_stop = on_progress, should_stop
        self._cancelled: set[str] = set()
        self._ended: list[RunEnd] = []

    def submit(self, rids: list[str], fuse: str = "auto") -> None:
        jobs = [Job.of(self.store, rid, self.checkpoint_dir) for rid in rids]

        def emit(rid: str, ev: Progress) -> None:
            lifecycle.record(self.store, rid, ev)
            if self.on_progress:
                self.on_progress(rid, ev)

        def stop(rid: str) -> bool:
            return rid in self._cancelled or bool(self.should_stop and self.should_stop(rid))

        try:
            for job in jobs:
                lifecycle.start(self.store, job.run_id)
                if self.store.get(job.run_id)["params"] is None:  # stored without its cost
                    params, macs = lifecycle.cost(job.model_config)
                    self.store.update(job.run_id, params=params, macs=macs)
            try:
                out = train_jobs(jobs, emit, stop, self.data, fuse)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - the group itself failed (its data, its device): each run says why
                out = dict.fromkeys(rids, e)
            for rid in rids:
                e = lifecycle.outcome(rid, out[rid])
                if e.status == "done":
                    lifecycle.end(self.store, e)  # a store that fails now fails the call (execute_group says so)
                else:
                    lifecycle.end_quietly(self.store, e)
                if e.status == "failed":
                    _free_device_memory()
                self._ended.append(e)
        except KeyboardInterrupt:
            for rid in rids:
                with contextlib.suppress(StoreError):
                    if self.store.get(rid)["status"] in ACTIVE:
                        lifecycle.end_quietly(self.store, RunEnd(rid, "interrupted", "interrupted (Ctrl-C)"))
            raise

    def cancel(self, rid: str) -> None:
        self._cancelled.add(rid)

    def ended(self, timeout: float = 0.0) -> list[RunEnd]:
        out, self._ended = self._ended, []
        return out

    def close(self, timeout: float = 30.0) -> None:
        pass  # nothing outlives submit


def execute_group(store: RunStore, rids: list[str], checkpoint_dir: str | Path | None = None, *, data=None,
                  on_progress=None, should_stop=None, fuse: str = "auto") -> list[dict]:
    """Train stored runs in this process (InProcess), fused where they can be; their rows as they ended. A
    failing store is reported as each run failed with the store's message."""
    rows = [store.get(rid) for rid in rids]
    try:
        InProcess(store, checkpoint_dir, data=data, on_progress=on_progress, should_stop=should_stop).submit(rids,
                                                                                                            fuse)
        return [store.get(rid) for rid in rids]
    except StoreError as e:
        return [{**row, "status": "failed", "message": lifecycle.failure_message(e)} for row in rows]


def execute(store: RunStore, rid: str, checkpoint_dir: str | Path | None = None, *, data=None,
            on_progress=None, should_stop=None) -> dict:
    """Train one stored run in this process (see execute_group)."""
    return execute_group(store, [rid], checkpoint_dir, data=data,
                         on_progress=on_progress and (lambda _rid, ev: on_progress(ev)),
                         should_stop=should_stop and (lambda _rid: should_stop()))[0]


def _free_device_memory() -> None:
    """Give a failed run's cached GPU memory back, so the next run in this process starts clean."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
