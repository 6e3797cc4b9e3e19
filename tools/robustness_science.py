"""The corruption-robustness numbers in docs/RESULTS.md: evaluate runs and shipped checkpoints, write JSON/CSV, print
the summary tables.

    OMP_NUM_THREADS=1 nice -n 10 python tools/robustness_science.py run --store /tmp/science \
        --data-root /work/shared/datasets            # docs/results/robustness-{cifar10,mnist}.json and .csv
    python tools/robustness_science.py tables        # the markdown tables from those files
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mscompare import robustness
from mscompare.runs import RunStore
from mscompare.settings import shipped_dir

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"
UNITS = ["alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"]


def _progress(what: str, total: int):
    state = {"n": 0, "t": time.time()}

    def step(k: int) -> None:
        before, state["n"] = state["n"], state["n"] + k
        if state["n"] * 20 // total != before * 20 // total:  # every 5%
            print(f"{what}: {state['n']}/{total} steps, {time.time() - state['t']:.0f} s", file=sys.stderr, flush=True)
    return step


def _write(dataset: str, results: list[dict]) -> None:
    (OUT / f"robustness-{dataset}.json").write_text(json.dumps(results, indent=1) + "\n")
    rows = [{"source": r["source"], "model": r["model"], "seed": r["seed"], "run_id": r["run_id"],
             "corruption": name, "severity": s, "accuracy": round(a, 4)}
            for r in results for name, accs in [("clean", [r["clean"]] * 5), *r["corruptions"].items()]
            for s, a in enumerate(accs, start=1) if name != "clean" or s == 1]
    pd.DataFrame(rows).to_csv(OUT / f"robustness-{dataset}.csv", index=False)


def run(a) -> None:
    store = RunStore(a.store)
    runs = [r for r in store.list(status="done", dataset="cifar10", preset="paper")]
    ids = [r["id"] for r in runs]
    res = robustness.for_runs(store, ids, data_root=a.data_root,
                              progress=_progress("cifar10 runs", robustness.pending_steps(store, ids)))
    seed_of = {r["id"]: r["seed"] for r in runs}
    cifar = [{**r, "source": f"run store {a.store}", "seed": seed_of[r["run_id"]]} for r in res]
    _write("cifar10", cifar)
    have = {r["model"] for r in cifar}
    manifest = json.loads((shipped_dir() / "manifest.json").read_text())
    for dataset in ("cifar10", "mnist"):
        entries = [e for e in manifest if e["dataset"] == dataset and e["model"] in UNITS
                   and (dataset == "mnist" or e["model"] not in have)]
        paths = [shipped_dir() / e["file"] for e in entries]
        total = len(paths) * robustness.steps(3 if dataset == "cifar10" else 1)
        res = robustness.for_checkpoints(paths, a.data_root, progress=_progress(f"{dataset} shipped", total))
        shipped = [{**r, "source": f"checkpoints/{e['file']}", "seed": e["seed"]} for r, e in zip(res, entries)]
        if dataset == "cifar10":
            cifar += shipped
            _write("cifar10", cifar)
        else:
            _write("mnist", shipped)


def tables(_a) -> None:
    for dataset in ("cifar10", "mnist"):
        f = OUT / f"robustness-{dataset}.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        rows, curve = [], []
        for m in UNITS:
            mine = [r for r in res if r["model"] == m]
            if not mine:
                continue

            def stat(k, scale=100):
                v = np.array([r[k] for r in mine]) * scale
                return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"
            per = {name: np.mean([np.mean(r["corruptions"][name]) for r in mine]) * 100
                   for name in mine[0]["corruptions"]}
            sev = np.mean([[np.mean([r["corruptions"][n][s] for n in r["corruptions"]]) for s in range(5)]
                           for r in mine], axis=0) * 100
            rows.append({"unit": m, "seeds": len(mine), "clean %": stat("clean"),
                         "mean corruption %": stat("mean_corruption"), "relative drop %": stat("relative_drop"),
                         **{n: f"{v:.1f}" for n, v in per.items()}})
            curve.append({"unit": m, **{f"severity {s + 1}": f"{v:.1f}" for s, v in enumerate(sev)}})
        print(f"\n### {dataset}\n")
        print(pd.DataFrame(rows).to_markdown(index=False))
        print("\nmean over corruptions at each severity (%):\n")
        print(pd.DataFrame(curve).to_markdown(index=False))
        seeded = [m for m in UNITS if sum(r["model"] == m for r in res) > 1]
        pairs = [(x, y) for i, x in enumerate(seeded) for y in seeded[i + 1:]]
        if pairs:
            from scipy.stats import ttest_ind

            print("\nunit A - unit B over seeds (points; Welch's t-test p):\n")
            out = []
            for x, y in pairs:
                row = {"A": x, "B": y}
                for k in ("mean_corruption", "relative_drop"):
                    va, vb = ([100 * r[k] for r in res if r["model"] == m] for m in (x, y))
                    p = ttest_ind(va, vb, equal_var=False).pvalue
                    row[k] = f"{np.mean(va) - np.mean(vb):+.2f} (p {p:.2g})"
                out.append(row)
            print(pd.DataFrame(out).to_markdown(index=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--store", required=True)
    r.add_argument("--data-root", required=True)
    sub.add_parser("tables")
    a = p.parse_args()
    {"run": run, "tables": tables}[a.cmd](a)


if __name__ == "__main__":
    main()
