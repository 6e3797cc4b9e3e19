"""The Ray executor: each stored run a Ray task (one CPU, one GPU where it trains on CUDA), joined or started."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from mscompare import lifecycle, predictions
from mscompare.events import Progress, RunEnd, RunResult
from mscompare.jobs import Job
from mscompare.runs import RunStore

GCS_WAIT = "RAY_gcs_server_port_wait_time_s"  # how many times Ray tries to reach a cluster's GCS
RAY_LOG_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] ")  # Ray's C++ log lines


def _ray_trial(job: dict) -> dict:
    """Runs on a Ray worker: the run, its eval points and its checkpoint's and predictions' bytes come back."""
    from mscompare.jobs import train_job
    from mscompare.threads import configure_process, policy

    configure_process(policy(1))
    points: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        ck, preds = str(Path(tmp) / "model.safetensors"), str(Path(tmp) / "predictions.npz")
        j = Job.from_dict({**job, "checkpoint": ck, "predictions": preds})
        res = train_job(j, lambda p: points.append(p.to_dict()) if p.is_eval else None)
        return {"result": res.to_dict(), "points": points, "checkpoint_bytes": Path(ck).read_bytes(),
                "predictions_bytes": Path(preds).read_bytes()}


class RayExecutor:
    """Executor: each submitted run as a Ray task on the cluster at `address` (`auto`: join the one running
    here, or start a local one with `workers` CPUs). Eval points, checkpoint and predictions are recorded on
    this machine when the task returns; a failed task ends the run as failed (the caller may retry it)."""

    def __init__(self, store: RunStore, checkpoint_dir: str | Path, address: str = "auto", workers: int = 0):
        import ray

        self.store, self.checkpoint_dir = store, Path(checkpoint_dir)
        self._refs: dict = {}  # Ray object ref -> run id
        self._ended: list[RunEnd] = []
        if ray.is_initialized():
            return
        env = {"env_vars": {"OMP_NUM_THREADS": "1"}}  # workers import the installed package (pip install -e .)
        if address == "auto":
            try:
                ray.init(address="auto", runtime_env=env, log_to_driver=False)
            except ConnectionError:  # no cluster running: start a local one
                ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False, num_cpus=workers or None)
        else:
            _join_ray(address, env)

    def submit(self, rids: list[str], fuse: str = "auto") -> None:
        import ray

        from mscompare.train import resolve_device

        for rid in rids:
            job = Job.of(self.store, rid)
            gpus = 1 if resolve_device(job.train_config.device).type == "cuda" else 0
            task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_trial)
            lifecycle.start(self.store, rid)
            self._refs[task.remote(job.to_dict())] = rid

    def cancel(self, rid: str) -> None:
        import ray

        for ref, r in list(self._refs.items()):
            if r == rid:
                ray.cancel(ref, force=True)
                del self._refs[ref]
                e = RunEnd(rid, "cancelled", "cancelled by the user")
                lifecycle.end(self.store, e, only_active=True)
                self._ended.append(e)

    def ended(self, timeout: float = 0.0) -> list[RunEnd]:
        import ray

        if self._refs:
            ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
            if ready:
                ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            for ref in ready:
                self._ended.append(self._record(self._refs.pop(ref), ref))
        out, self._ended = self._ended, []
        return out

    def _record(self, rid: str, ref) -> RunEnd:
        """A finished task's run into the store: its points, checkpoint, predictions and end."""
        import ray

        try:
            out = ray.get(ref)
        except Exception as ex:  # noqa: BLE001 - the task raised, or its worker died
            e = RunEnd(rid, "failed", lifecycle.failure_message(getattr(ex, "cause", None) or ex))
        else:
            for p in out["points"]:
                lifecycle.record(self.store, rid, Progress.from_dict(p))
            ck = self.checkpoint_dir / f"{rid}.safetensors"
            ck.parent.mkdir(parents=True, exist_ok=True)
            ck.write_bytes(out["checkpoint_bytes"])
            predictions.save(predictions.path_for(self.store.dir, rid),
                             predictions.Predictions.from_bytes(out["predictions_bytes"]))
            res = RunResult.from_dict({**out["result"], "checkpoint": str(ck)})
            e = RunEnd(rid, "done", result=res)
        lifecycle.end(self.store, e, only_active=True)
        return e

    def close(self, timeout: float = 30.0) -> None:
        pass  # the Ray connection stays for the next sweep of this process


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


