"""A training worker process: reads one job (JSON) on stdin, trains it, writes JSON-line events on stdout."""
from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    job = json.loads(sys.stdin.readline())
    events = os.fdopen(os.dup(1), "w")  # events get their own pipe; anything else printed goes to stderr
    os.dup2(2, 1)
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
    from mscompare.threads import configure_process, restore_nice

    restore_nice(job.get("nice"))
    configure_process(job["policy"])  # the parent set the environment; this records and applies the threads

    from mscompare.config import TrainConfig
    from mscompare.jobs import failure_message, run_trial
    from mscompare.models import ModelConfig
    from mscompare.train import Cancelled

    def emit(ev: dict) -> None:
        print(json.dumps({"event": "progress", **ev}), file=events, flush=True)

    try:
        mcfg = ModelConfig.from_dict(job["model_config"])
        tcfg = TrainConfig.from_dict(job["train_config"])
        result = run_trial(mcfg, tcfg, job["checkpoint"], emit, lambda: stop["asked"], run_id=job["run_id"],
                           predictions=job.get("predictions"))
        print(json.dumps({"event": "done", "result": result}), file=events, flush=True)
    except Cancelled:
        print(json.dumps({"event": "cancelled", "message": "cancelled by the user"}), file=events, flush=True)
    except BrokenPipeError:  # the app that started us is gone
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the parent as the run's failure
        print(json.dumps({"event": "failed", "message": failure_message(e)}), file=events, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
