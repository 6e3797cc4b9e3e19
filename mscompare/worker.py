"""A training worker process: reads one job (JSON) on stdin, trains its runs (fused where they can be), writes
JSON lines on stdout, each naming its run (events.Progress as "progress", events.RunEnd as "end"). Later stdin
lines `cancel RUN_ID` stop one run; SIGTERM all."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading


def _listen(stopped: set[str]) -> None:
    """Cancel requests, one `cancel RUN_ID` line each, until the parent closes stdin."""
    for line in sys.stdin:
        verb, _, rid = line.strip().partition(" ")
        if verb == "cancel":
            stopped.add(rid)


def main() -> int:
    job = json.loads(sys.stdin.readline())
    events = os.fdopen(os.dup(1), "w")  # events get their own pipe; anything else printed goes to stderr
    os.dup2(2, 1)
    stopped: set[str] = set()
    everything = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: everything.update(asked=True))
    threading.Thread(target=_listen, args=(stopped,), daemon=True).start()
    from mscompare.threads import configure_process, restore_nice

    restore_nice(job.get("nice"))
    configure_process(job["policy"])  # the parent set the environment; this records and applies the threads

    from mscompare.events import Progress
    from mscompare.jobs import Job, train_jobs
    from mscompare.lifecycle import outcome

    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            print(json.dumps(msg), file=events, flush=True)

    def progress(rid: str, p: Progress) -> None:
        send({"event": "progress", "run_id": rid, **p.to_dict()})

    runs = [Job.from_dict(r) for r in job["runs"]]
    reported: set[str] = set()

    def report(rid: str, res) -> None:
        reported.add(rid)
        send({"event": "end", **outcome(rid, res).to_dict()})

    try:
        out = train_jobs(runs, progress, lambda rid: everything["asked"] or rid in stopped,
                        fuse=job.get("fuse", "auto"), on_end=report)
    except BrokenPipeError:  # the app that started us is gone
        return 1
    except Exception as e:  # noqa: BLE001 - the group itself failed: every run reports the cause
        out = {r.run_id: e for r in runs}
    try:
        for r in runs:
            if r.run_id not in reported:
                report(r.run_id, out[r.run_id])
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
