"""A training worker process: forked from the forkserver that has torch and the training code imported (PRELOAD),
it trains one job's runs (fused where they can be) and sends each run's events.Progress and events.RunEnd on a
pipe. A run id sent on the control pipe stops that run; SIGTERM stops all."""
from __future__ import annotations

import os
import signal
import threading
from multiprocessing.connection import Connection

# What the forkserver imports once, so that a worker forked from it starts in milliseconds instead of spending
# ~2.5 CPU-s on imports: torch (1.2 s), torch._dynamo (1.0 s; torch.optim imports it on a model's first step),
# torchvision (the run record names its version) and the training code.
PRELOAD = ("torch", "torch._dynamo", "torchvision", "mscompare.jobs", "mscompare.train", "mscompare.fused",
           "mscompare.data", "mscompare.checkpoints", "mscompare.stats", "mscompare.threads")


def _listen(control: Connection, stopped: set[str]) -> None:
    """Cancel requests, one run id each, until the parent closes its end."""
    while True:
        try:
            stopped.add(control.recv())
        except (EOFError, OSError):
            return


def run(job: dict, events: Connection, control: Connection, errlog: str) -> None:
    """The worker's body: `job` is {"runs", "fuse", "policy", "nice", "env"}; the events go to `events`, anything
    printed to the file `errlog` (the parent shows its last line if the worker dies)."""
    fd = os.open(errlog, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    loaded_with = os.environ.get("OMP_WAIT_POLICY") or "default"  # what OpenMP read when the forkserver loaded torch
    os.environ.clear()  # the parent's environment now, not the forkserver's at its start (settings read it)
    os.environ.update(job["env"])
    stopped: set[str] = set()
    everything = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: everything.update(asked=True))
    threading.Thread(target=_listen, args=(control, stopped), daemon=True).start()
    from mscompare.events import Progress
    from mscompare.jobs import Job, train_jobs
    from mscompare.lifecycle import outcome
    from mscompare.threads import configure_process, restore_nice

    restore_nice(job.get("nice"))
    configure_process({**job["policy"], "wait_policy": loaded_with}, wait_policy_applied=True)
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            events.send(msg)

    def progress(rid: str, p: Progress) -> None:
        send({"event": "progress", "run_id": rid, **p.to_dict()})

    runs = [Job.from_dict(r) for r in job["runs"]]
    reported: set[str] = set()

    def report(rid: str, res) -> None:
        reported.add(rid)
        send({"event": "end", **outcome(rid, res).to_dict()})

    try:
        try:
            out = train_jobs(runs, progress, lambda rid: everything["asked"] or rid in stopped,
                             fuse=job.get("fuse", "auto"), on_end=report)
        except Exception as e:  # noqa: BLE001 - the group itself failed: every run reports the cause
            if isinstance(e, (BrokenPipeError, EOFError)):
                raise
            out = {r.run_id: e for r in runs}
        for r in runs:
            if r.run_id not in reported:
                report(r.run_id, out[r.run_id])
    except (BrokenPipeError, EOFError):  # the app that started us is gone
        os._exit(1)
