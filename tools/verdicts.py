"""Print the paired verdicts between every two configurations of a run store as Markdown (docs/RESULTS.md).

    python tools/verdicts.py [--runs-dir DIR] [--dataset cifar10] [--preset paper] [--models ...] [--csv FILE]

Groups the finished runs by configuration (mscompare.groups), then compares every pair of configurations with
`groups.compare` (two-level bootstrap over seeds and test images; exact McNemar per seed pair). --csv also
writes the per-run rows (id, model, seed, accuracy, params, MACs, seconds, images/s, env).
"""
from __future__ import annotations

import argparse
import itertools
import json

import pandas as pd

from mscompare import settings
from mscompare.groups import compare, group
from mscompare.runs import RunStore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=str(settings.runs_dir()))
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--csv", help="also write the per-run rows here")
    a = ap.parse_args()
    store = RunStore(a.runs_dir)
    runs = [r for r in store.list(status="done", dataset=a.dataset, preset=a.preset)
            if not a.models or r["model"] in a.models]
    g = group(runs)
    print("| configuration | seeds | accuracy % (mean ± std) | min–max % |")
    print("|---|---|---|---|")
    for r in g.itertuples():
        print(f"| {r.label} | {r.n} | {100 * r.mean:.2f} ± {100 * (r.std if r.n > 1 else 0):.2f} | "
              f"{100 * r.min:.2f}–{100 * r.max:.2f} |")
    print("\n| A | B | A − B (points) | 95% CI | McNemar p per seed pair | verdict |")
    print("|---|---|---|---|---|---|")
    for x, y in itertools.combinations(g.itertuples(), 2):
        c = compare(store, list(x.runs), list(y.runs))
        if c["diff"] < 0:  # state each pair as the better one first
            c, x, y = compare(store, list(y.runs), list(x.runs)), y, x
        print(f"| {x.model} | {y.model} | {c['diff']:+.2f} | [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] | "
              + ", ".join(f"{p:.2g}" for p in c["p_mcnemar"]) + f" | {c['sentence']} |")
    if a.csv:
        rows = [{"run_id": r["id"], "model": r["model"], "dataset": r["dataset"], "preset": r["preset"],
                 "iters": r["iters"], "seed": r["seed"], "width": r["width"], "units": r["units"],
                 "test_acc": r["test_acc"], "params": r["params"], "macs": r["macs"], "seconds": r["seconds"],
                 "images_per_s": r["images_per_s"], "precision": json.loads(r["env"] or "{}").get("precision"),
                 "device": json.loads(r["env"] or "{}").get("device")} for r in runs]
        pd.DataFrame(rows).sort_values(["model", "seed"]).to_csv(a.csv, index=False)
        print(f"\nwrote {len(rows)} runs to {a.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
