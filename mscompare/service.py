"""What the app needs from the library in one object: the run store, the run manager, datasets and tables."""
from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from pathlib import Path

import pandas as pd

from mscompare import lifecycle, settings
from mscompare.config import config_for, preset
from mscompare.datasets import DATASETS
from mscompare.settings import data_roots
from mscompare.events import RunEnd
from mscompare.manager import RunManager
from mscompare.runs import ACTIVE, RunStore, new_batch_id
from mscompare.sweeps import SweepLog

MAX_SEEDS = 10
DEFAULT_SEEDS = 3  # the fewest seeds that give a seed spread to compare against (README: Seeds)
START_DEDUP = 5.0  # seconds in which the same Start request again is taken for a double-click
RESULT_COLUMNS = ["run_id", "model", "dataset", "preset", "iters", "seed", "units", "width", "status", "params",
                  "macs", "test_acc_%", "seconds", "images_per_s", "created"]


def find_datasets(roots: list[Path] | None = None) -> dict[str, str]:
    """Datasets present under the data roots: name -> root. A dataset is a folder holding train.npz,
    a train/ image folder, or a built-in's official files (raw/ or tiny-imagenet-200/)."""
    found: dict[str, str] = {}
    for root in roots if roots is not None else data_roots():
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or d.name in found:
                continue
            if any((d / f).exists() for f in ("train.npz", "train", "raw", "tiny-imagenet-200")):
                found[d.name] = str(root)
    return found


def no_data_help() -> str:
    roots = ", ".join(str(r) for r in data_roots())
    return (f"No datasets found under {roots}. Put a dataset folder there (train.npz + test.npz, or "
            f"train/<class>/ and test/<class>/ images), or set MSCOMPARE_DATA_ROOT before starting the app.")


@functools.lru_cache(maxsize=2)  # a bounded number of test splits in memory, whatever users pick
def _test_split(dataset: str, data_root: str):
    from mscompare.data import load_split

    return load_split(dataset, data_root, train=False)


class Service:
    """One per app process: trainings outlive browser tabs because they live here, not in a session."""

    def __init__(self, runs_dir: str | Path | None = None, concurrency: int = 0):
        self.store = RunStore(runs_dir or settings.runs_dir())
        self.manager = RunManager(self.store, concurrency=concurrency)
        self.sweeps: dict[str, dict] = {}  # the sweeps this process runs; all of the store's: sweep_log
        self.sweep_log = SweepLog(self.store)
        self._start_lock = threading.Lock()
        self._last_start: tuple[str, float, tuple[str, list[str]]] | None = None

    @property
    def concurrency(self) -> int:
        return self.manager.concurrency

    def start(self, models: list[str], dataset: str, preset_name: str, data_root: str, device: str = "auto",
              iters: int | None = None, units: int | None = None, width: int = 32, seed: int = 0,
              precision: str = "fp32", seeds: int = 1, fuse: str = "auto") -> tuple[str, list[str]]:
        """Queue one run per model and seed (seed, seed+1, ...) as one batch; returns (batch id, run ids). The
        same request again within START_DEDUP seconds (a double-click) returns the first batch instead of a
        second one. Bad settings raise ValueError or TrainingError before anything is queued."""
        if not models:
            raise ValueError("choose at least one model")
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"seeds must be 1-{MAX_SEEDS}, got {seeds}")
        request = json.dumps([models, dataset, preset_name, data_root, device, iters, units, width, seed, precision,
                              seeds, fuse])
        with self._start_lock:
            last = self._last_start
            if last and last[0] == request and time.time() - last[1] < START_DEDUP:
                return last[2]
            result = self._start(models, dataset, preset_name, data_root, device, iters, units, width, seed,
                                 precision, seeds, fuse)
            self._last_start = (request, time.time(), result)
            return result

    def _start(self, models, dataset, preset_name, data_root, device, iters, units, width, seed, precision, seeds,
               fuse) -> tuple[str, list[str]]:
        from mscompare.train import resolve_device

        resolve_device(device)
        tcfg = preset(preset_name, dataset, iters=iters, device=device, seed=seed, data_root=data_root,
                      precision=precision)
        shape = {}
        if dataset not in DATASETS:
            from mscompare.data import load_split

            d = load_split(dataset, data_root, train=False)
            shape = {"in_channels": d.shape[0], "input_size": d.shape[1], "num_classes": len(d.classes)}
        cfgs = [config_for(m, dataset, units=units, width=width, **shape) for m in models]
        batch = new_batch_id()
        runs = [(c, dataclasses.replace(tcfg, seed=seed + k)) for c in cfgs for k in range(seeds)]
        return batch, self.manager.add_many(runs, tag="app", batch=batch, fuse=fuse)

    def cancel(self, rid: str) -> None:
        """Cancel any active run: this server's batch runs through its manager; another's (a sweep's, the
        CLI's) is marked cancelled in the store, which a sweep's loop takes as the order to stop it."""
        if self.manager.snapshot(rid):
            self.manager.cancel(rid)
            return
        row = self.store.get(rid)
        if row is not None and row["status"] in ACTIVE:
            lifecycle.end(self.store, RunEnd(rid, "cancelled", "cancelled by the user"))

    def training(self) -> bool:
        """Whether runs train now: a batch's or a sweep's."""
        return self.manager.active() or any(s["thread"].is_alive() for s in list(self.sweeps.values()))

    def start_sweep(self, models: list[str], datasets: list[str], widths: list[int], units: list[int] | None,
                    seeds: int, preset_name: str, iters: int | None, data_root: str, executor: str = "local",
                    workers: int = 0, device: str = "auto") -> str:
        """Run a sweep in a background thread, recorded in the sweep log (mscompare.sweeps) so every tab and a
        restarted server see it; its progress is in `sweep_status(id)`. The same request while that sweep still
        runs (a double-click, a second tab) returns the running sweep. Bad settings raise first."""
        from mscompare.sweep import EXECUTORS, finished_runs, grid, run_trials

        if not models or not datasets or not widths:
            raise ValueError("choose at least one model, one dataset and one width")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}")
        request = {"models": list(models), "datasets": list(datasets), "widths": [int(w) for w in widths],
                   "units": [int(u) for u in units or []], "seeds": int(seeds), "preset": preset_name,
                   "iters": iters, "data_root": str(data_root), "executor": executor, "device": device}
        with self._start_lock:
            same = [sid for sid, s in self.sweeps.items() if s["thread"].is_alive() and s["request"] == request]
            if same:
                return same[0]
            trials = grid(models, datasets, widths, units or None, seeds, preset_name, iters, data_root, device)
            skipped = sum(r is not None for r in finished_runs(self.store, trials))
            sid = self.sweep_log.create(request, len(trials), skipped, executor)["id"]
            state = {"id": sid, "request": request, "summary": None, "stop": threading.Event()}

            def work():
                end, error = "done", ""
                try:
                    state["summary"] = run_trials(self.store, trials, tag=sid, executor=executor, workers=workers,
                                                  ray_address=settings.ray_address(),
                                                  should_stop=lambda: state["stop"].is_set()
                                                  or self.sweep_log.stop_requested(sid))
                except KeyboardInterrupt:
                    end = "cancelled"
                except Exception as e:  # noqa: BLE001 - shown on the page, never a dead thread
                    end, error = "failed", lifecycle.failure_message(e)
                self.sweep_log.finish(sid, end, error)

            state["thread"] = threading.Thread(target=work, daemon=True, name=sid)
            self.sweeps[sid] = state
            state["thread"].start()
            return sid

    def sweep_list(self) -> list[dict]:
        """Every sweep of the run store (this server's, another's, the CLI's), newest first, with progress."""
        return self.sweep_log.list()

    def sweep_status(self, sid: str) -> dict:
        """One sweep's record and progress (sweeps.SweepLog.get) plus a record per trial that ended; KeyError
        for an unknown id."""
        from mscompare.sweep import record

        rec = self.sweep_log.get(sid)
        if rec is None:
            raise KeyError(sid)
        mine = self.sweeps.get(sid)
        if mine is not None:  # this process runs it: alive until its thread has written the end
            rec["running"] = rec["running"] and mine["thread"].is_alive()
        rec["summary"] = mine["summary"] if mine else None
        rec["results"] = [record(r) for r in self.store.list(tag=sid) if r["status"] not in ACTIVE]
        return rec

    def cancel_sweep(self, sid: str) -> None:
        """Stop a sweep wherever it runs: what is left is cancelled, the sweep ends as cancelled."""
        if sid in self.sweeps:
            self.sweeps[sid]["stop"].set()
        self.sweep_log.cancel(sid)

    def evaluation(self, rid: str) -> dict | None:
        """A finished run's whole-test-set evaluation with class names and, where the test split can still be
        loaded, its most confidently misclassified images (uint8 H x W x C) for a gallery."""
        row = self.store.get(rid)
        if row is None or not row.get("evaluation"):
            return None
        ev = json.loads(row["evaluation"])
        tcfg = json.loads(row["train_config"])
        ev["classes"], ev["images"] = [str(i) for i in range(len(ev["per_class"]))], []
        try:
            test = _test_split(tcfg["dataset"], tcfg["data_root"])
        except Exception as e:  # noqa: BLE001 - the data moved or changed: show the numbers without images
            ev["images_error"] = str(e)
            return ev
        n = len(ev["per_class"])  # the model's outputs; a dataset may name fewer classes than a built-in's count
        ev["classes"] = (list(test.classes) + [str(i) for i in range(len(test.classes), n)])[:n]
        ev["images"] = [(test.x[m["index"]].numpy(), m) for m in ev["misclassified"] if m["index"] < len(test)]
        return ev

    def frontier_points(self):
        """Every finished run, one point per configuration of the full protocol (mean and std over seeds)."""
        from mscompare.frontier import mean_over_seeds

        return mean_over_seeds(self.store.list(status="done"))

    def groups(self, ids: list[str] | None = None, finished: bool = True, **where) -> pd.DataFrame:
        """The finished (or, `finished` False, all) runs among `ids` (or matching `where`) grouped by
        configuration (groups.group)."""
        from mscompare.groups import group

        return group(self.store.list(ids=ids, **where), finished)

    def against(self, grouped: pd.DataFrame, reference: str) -> pd.DataFrame:
        """Each configuration's paired difference from the `reference` label: delta, CI and verdict."""
        from mscompare.groups import against_reference

        return against_reference(self.store, grouped, reference)

    def compare(self, a_ids: list[str], b_ids: list[str]) -> dict:
        from mscompare.groups import compare

        return compare(self.store, a_ids, b_ids)

    def band_curves(self, grouped: pd.DataFrame) -> pd.DataFrame:
        """Each configuration's curves as mean and min-max over its seeds."""
        from mscompare.charts import band_curves

        label = {rid: g.label for g in grouped.itertuples() for rid in g.runs}
        curves = pd.DataFrame(self.store.curves(list(label)), columns=["run_id", "iter", "test_acc", "loss"])
        return band_curves(curves, label)

    def report(self, ids: list[str], reference: str | None = None) -> str:
        """The self-contained HTML report of these runs (mscompare.report)."""
        from mscompare.report import build

        return build(self.store, ids, reference)

    def batches(self) -> list[dict]:
        return self.store.batches(tag="app")

    def runs(self, ids: list[str] | None = None, **where) -> pd.DataFrame:
        """Stored runs (newest first) with the live iteration, loss, images/s and ETA of the running ones."""
        rows = self.store.list(ids=ids, **where)
        live = self.manager.snapshots()
        for r in rows:
            s = live.get(r["id"], {})
            r["iter"] = s.get("iter", r["iters"] if r["status"] == "done" else 0)
            r["eta_s"] = round(s["eta"]) if r["status"] == "running" and "eta" in s else None
            r["live_loss"] = s.get("loss")
            r["live_images_per_s"] = s.get("images_per_s") if r["status"] in ACTIVE else r["images_per_s"]
            if r["status"] in ACTIVE and s.get("status") and s["status"] not in ACTIVE:
                r["status"] = s["status"]
        cols = ["id", "status", "model", "dataset", "preset", "seed", "units", "width", "iter", "iters", "test_acc",
                "params", "macs", "seconds", "images_per_s", "live_loss", "live_images_per_s", "eta_s", "message",
                "created", "batch"]
        df = pd.DataFrame(rows, columns=cols)
        return df.sort_values("created", ascending=False).reset_index(drop=True)

    def curves(self, ids: list[str]) -> pd.DataFrame:
        """Long-form test accuracy and loss curves; `label` names each run (run_labels), `model` its model."""
        df = pd.DataFrame(self.store.curves(ids), columns=["run_id", "iter", "test_acc", "loss"])
        df["label"] = df["run_id"].map(self.run_labels(ids))
        df["model"] = df["run_id"].map({r["id"]: r["model"] for r in self.store.list(ids=list(dict.fromkeys(ids)))})
        return df

    def run_labels(self, ids: list[str] | None = None) -> dict[str, str]:
        """groups.run_label of each run asked for (all with None), by id: the one way a run is named."""
        from mscompare.groups import run_labels

        return run_labels(self.store.list(ids=list(dict.fromkeys(ids)) if ids is not None else None))

    @staticmethod
    def results(runs: pd.DataFrame) -> pd.DataFrame:
        """Like the paper's Tables 3-6, one row per run, integers as integers and times in ISO 8601."""
        out = runs.rename(columns={"id": "run_id"}).copy()
        for col in ("test_acc", "seconds", "images_per_s"):
            out[col] = pd.to_numeric(out[col], errors="coerce")
        out["test_acc_%"] = (out["test_acc"] * 100).round(2)
        out["seconds"] = out["seconds"].round(1)
        out["images_per_s"] = out["images_per_s"].round(0)
        for col in ("iters", "seed", "units", "width", "params", "macs", "images_per_s"):
            out[col] = pd.array(pd.to_numeric(out[col], errors="coerce"), dtype="Int64")
        out["created"] = pd.to_datetime(out["created"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out[RESULT_COLUMNS]
