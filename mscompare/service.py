"""What the app needs from the library in one object: the run store, the background manager, and tables."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mscompare.config import DATASETS, config_for
from mscompare.runs import ACTIVE, RunManager, RunStore
from mscompare.train import preset, resolve_device

REPO = Path(__file__).resolve().parent.parent


def default_data_root() -> str:
    """$MSCOMPARE_DATA_ROOT, else ./data; on a machine with the offline copies, ../shared/datasets."""
    if os.environ.get("MSCOMPARE_DATA_ROOT"):
        return os.environ["MSCOMPARE_DATA_ROOT"]
    shared = REPO.parent / "shared" / "datasets"
    return str(shared) if shared.is_dir() and not (REPO / "data").is_dir() else str(REPO / "data")


class Service:
    """One per app process: trainings outlive browser tabs because they live here, not in a session."""

    def __init__(self, runs_dir: str | Path | None = None, concurrency: int = 1):
        runs_dir = runs_dir or os.environ.get("MSCOMPARE_RUNS_DIR", str(REPO / "runs"))
        self.store = RunStore(runs_dir)
        self.manager = RunManager(self.store, concurrency=concurrency)

    def start(self, models: list[str], dataset: str, preset_name: str, data_root: str, device: str = "auto",
              iters: int | None = None, units: int | None = None, width: int = 32, seed: int = 0) -> list[str]:
        """Queue one run per model; raises ValueError/TrainingError on bad settings before queuing any."""
        if not models:
            raise ValueError("choose at least one model")
        resolve_device(device)
        tcfg = preset(preset_name, dataset, iters=iters, device=device, seed=seed, data_root=data_root)
        shape = {}
        if dataset not in DATASETS:
            from mscompare.data import load_split

            d = load_split(dataset, data_root, train=False)
            shape = {"in_channels": d.shape[0], "input_size": d.shape[1], "num_classes": len(d.classes)}
        cfgs = [config_for(m, dataset, units=units, width=width, **shape) for m in models]
        return [self.manager.submit(c, tcfg, tag="app") for c in cfgs]

    def cancel(self, rid: str) -> None:
        self.manager.cancel(rid)

    def runs(self, ids: list[str] | None = None, **where) -> pd.DataFrame:
        """Stored runs (newest first) with the live iteration/ETA of those running in this process."""
        rows = self.store.list(**where)
        if ids is not None:
            rows = [r for r in rows if r["id"] in set(ids)]
        live = self.manager.snapshots()
        for r in rows:
            s = live.get(r["id"], {})
            r["iter"] = s.get("iter", r["iters"] if r["status"] == "done" else 0)
            r["eta_s"] = round(s["eta"]) if r["status"] == "running" and "eta" in s else None
            if r["status"] in ACTIVE and s:
                r["status"] = s["status"]
        cols = ["id", "status", "model", "dataset", "preset", "seed", "iter", "iters", "test_acc", "params",
                "macs", "seconds", "images_per_s", "eta_s", "message", "created"]
        df = pd.DataFrame(rows, columns=cols)
        return df.sort_values("created", ascending=False).reset_index(drop=True)

    def curves(self, ids: list[str]) -> pd.DataFrame:
        """Long-form test accuracy curves; `label` names each run as model/dataset/seed."""
        df = pd.DataFrame(self.store.curves(ids), columns=["run_id", "iter", "test_acc", "loss"])
        rows = [r for r in map(self.store.get, dict.fromkeys(ids)) if r]  # only the runs asked for
        names = {r["id"]: f"{r['model']} ({r['dataset']}, {r['preset']}, s{r['seed']}, {r['id'][-6:]})" for r in rows}
        df["label"] = df["run_id"].map(names)
        return df

    @staticmethod
    def results(runs: pd.DataFrame) -> pd.DataFrame:
        """Like the paper's Tables 3-6, from `runs()` rows: model, params, MACs, accuracy (%), time, images/s."""
        out = runs[["model", "dataset", "status", "params", "macs", "test_acc", "seconds", "images_per_s"]].copy()
        out["test_acc"] = (out["test_acc"] * 100).round(2)
        return out.rename(columns={"test_acc": "test_acc_%"})
