"""bf16 against fp32 accuracy on real data: the check `auto` must pass before it may choose bf16.

Runs every model x dataset x seed (width 32) in fp32 and in bf16 autocast through the sweep's executor
(resumable: runs of the same protocol already in the store, from any sweep, are skipped and counted), then
writes a table of mean, spread and speed per precision:

    python tools/bf16_check.py --data-root ../shared/datasets            # run what is missing, then report
    python tools/bf16_check.py --data-root ../shared/datasets --report   # report only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from mscompare import settings
from mscompare.runs import RunStore
from mscompare.sweep import Trial, finished_runs, grid, run_trials

TAG = "bf16-check"
PRECISIONS = ("fp32", "bf16")


def trials(models, datasets, seeds, preset, iters, data_root, device) -> list[Trial]:
    base = grid(models, datasets, [32], seeds=seeds, preset_name=preset, iters=iters, data_root=data_root,
                device=device)
    return [Trial(t.model_config, dataclasses.replace(t.train_config, precision=p)) for p in PRECISIONS
            for t in base]


def summarize(rows: list[dict]) -> list[dict]:
    """One row per dataset x model: each precision's mean, min and max accuracy over seeds and mean images/s,
    and where bf16's mean lies against fp32's seed spread (its min..max): below, within or above it."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        t = json.loads(r["train_config"])
        groups.setdefault((r["dataset"], r["model"], t["iters"]), {}).setdefault(t["precision"], []).append(r)
    out = []
    for (ds, model, iters), by in sorted(groups.items()):
        if not all(by.get(p) for p in PRECISIONS):
            continue
        row = {"dataset": ds, "model": model, "iters": iters}
        for p in PRECISIONS:
            acc = [r["test_acc"] * 100 for r in by[p]]
            row.update({f"{p}_n": len(acc), f"{p}_mean": statistics.mean(acc), f"{p}_min": min(acc),
                        f"{p}_max": max(acc), f"{p}_img_s": statistics.mean(r["images_per_s"] for r in by[p])})
        row["diff"] = row["bf16_mean"] - row["fp32_mean"]
        row["place"] = ("below" if row["bf16_mean"] < row["fp32_min"] else
                        "above" if row["bf16_mean"] > row["fp32_max"] else "within")
        row["speed"] = row["bf16_img_s"] / row["fp32_img_s"]
        out.append(row)
    return out


def markdown(summary: list[dict]) -> str:
    lines = ["| dataset | model | iters | fp32 acc % (mean, min-max, n) | bf16 acc % (mean, min-max, n) | bf16 - fp32 "
             "| bf16 mean vs fp32's seed spread | bf16 / fp32 images/s |", "|---|---|---:|---|---|---:|---|---:|"]
    for s in summary:
        cell = {p: f"{s[p + '_mean']:.2f} ({s[p + '_min']:.2f}-{s[p + '_max']:.2f}, {s[p + '_n']})"
                for p in PRECISIONS}
        lines.append(f"| {s['dataset']} | {s['model']} | {s['iters']} | {cell['fp32']} | {cell['bf16']} | "
                     f"{s['diff']:+.2f} | {s['place']} | {s['speed']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["alexnet", "mobilenet", "googlenet", "ms_add"])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--iters", type=int)
    ap.add_argument("--data-root", default=str(settings.data_roots()[0]))
    ap.add_argument("--runs-dir", default=str(settings.runs_dir()))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="docs/results/bf16-check.md")
    ap.add_argument("--report", action="store_true", help="only write the table from runs already in the store")
    a = ap.parse_args()
    store = RunStore(a.runs_dir)
    if not a.report:
        from tqdm import tqdm

        for ds in a.datasets:  # one dataset at a time, so a partial check is whole for the first ones
            todo = trials(a.models, [ds], a.seeds, a.preset, a.iters, a.data_root, a.device)
            with tqdm(total=len(todo), unit="run", desc=ds) as bar:
                out = run_trials(store, todo, TAG, workers=a.workers, on_result=lambda rec: bar.update(1))
            print(f"{ds}: {out['done']} done, {out['failed']} failed, {out['skipped']} already in the store",
                  file=sys.stderr)
    rows = [r for r in finished_runs(store, trials(a.models, a.datasets, a.seeds, a.preset, a.iters, a.data_root,
                                                   a.device)) if r is not None]
    table = markdown(summarize(rows))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
