"""Print the Markdown tables of docs/RESULTS.md from the run store (after tools/reproduce_all.sh)."""
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mscompare.profile import compare  # noqa: E402
from mscompare.reproduce import PAPER_NOTES, table, tag_for  # noqa: E402
from mscompare.runs import RunStore  # noqa: E402


def acc(r) -> str:
    return f"{r.acc_mean:.2f} ± {r.acc_std:.2f}" if r.seeds > 1 else f"{r.acc_mean:.2f}"


store = RunStore(sys.argv[1] if len(sys.argv) > 1 else "runs")
for dataset in ("mnist", "cifar10"):
    df = table(store, dataset)
    if df.empty:
        continue
    df["ours (%)"] = df.apply(acc, axis=1)
    df["paper (%)"] = [PAPER_NOTES.get((dataset, m), "-") if pd.isna(v) else f"{v:.2f}"
                       for m, v in zip(df["model"], df["paper_acc"])]
    df["MACs"] = (df["macs"] / 1e6).map(lambda v: f"{v:.2f} M")
    df["train time (s)"] = df["seconds"].astype(int)
    df["img/s"] = df["images_per_s"].astype(int)
    print(f"\n### {dataset}\n")
    print(df[["model", "params", "MACs", "seeds", "ours (%)", "paper (%)", "train time (s)", "img/s"]]
          .to_markdown(index=False))
for dataset in ("mnist", "cifar10"):  # the modern recipe beside our own paper-preset numbers
    df = table(store, dataset, "modern")
    if df.empty:
        continue
    paper = table(store, dataset).set_index("model")
    df["modern (%)"] = df.apply(acc, axis=1)
    df["paper preset (%)"] = [acc(paper.loc[m]) if m in paper.index else "-" for m in df["model"]]
    df["gain (points)"] = [f"{a - paper.loc[m, 'acc_mean']:+.2f}" if m in paper.index else "-"
                           for m, a in zip(df["model"], df["acc_mean"])]
    df["train time (s)"] = df["seconds"].astype(int)
    print(f"\n### {dataset}, modern recipe\n")
    print(df[["model", "params", "seeds", "modern (%)", "paper preset (%)", "gain (points)", "train time (s)"]]
          .to_markdown(index=False, disable_numparse=True, colalign=["left"] + ["right"] * 6))
for preset_name in ("paper", "modern"):
    runs = pd.DataFrame([r for d in ("mnist", "cifar10")
                         for r in store.list(tag=tag_for(d, preset_name), status="done")])
    if not runs.empty:
        wall = (runs["finished"].max() - runs["started"].min()) / 3600
        print(f"\n{preset_name}: {len(runs)} runs, {runs['seconds'].sum() / 3600:.2f} h of training in total, "
              f"{wall:.2f} h wall clock (two runs side by side, one thread each).")
r = compare("cifar10").set_index("model")
print("\n### Parameters per unit (width 32)\n")
print(r[["unit_params", "unit_ratio"]].to_markdown())
