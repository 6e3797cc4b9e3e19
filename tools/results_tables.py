"""The numbers in docs/RESULTS.md: tables from the run store, per-run CSV exports, and the experiment sections.

    python tools/results_tables.py paper [--store runs]        # the reproduction tables (after reproduce_all.sh)
    python tools/results_tables.py export --store S --name N [--dataset D] [--tag T] [--exclude-tag T]
                                                                # docs/results/runs/N.csv
    python tools/results_tables.py experiments                  # the sections built from docs/results/runs/*.csv
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from mscompare import settings
from mscompare.profile import compare
from mscompare.datasets import DATASETS
from mscompare.reproduce import table, tag_for
from mscompare.runs import RunStore


def acc(r) -> str:
    return f"{r.acc_mean:.2f} ± {r.acc_std:.2f}" if r.seeds > 1 else f"{r.acc_mean:.2f}"


def paper(store: RunStore) -> None:
    for dataset in ("mnist", "cifar10"):
        df = table(store, dataset)
        if df.empty:
            continue
        df["ours (%)"] = df.apply(acc, axis=1)
        df["paper (%)"] = [DATASETS[dataset].paper_notes.get(m, "-") if pd.isna(v) else f"{v:.2f}"
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


RUNS_CSV = Path(__file__).resolve().parent.parent / "docs" / "results" / "runs"


def export(store: RunStore, name: str, exclude_tag: str | None = None, **where) -> Path:
    from mscompare.reproduce import runs_frame

    RUNS_CSV.mkdir(parents=True, exist_ok=True)
    rows = [r for r in store.list(**where) if r["status"] == "done" and r["tag"] != exclude_tag]
    out = RUNS_CSV / f"{name}.csv"
    runs_frame(store, rows).to_csv(out, index=False)
    print(f"wrote {len(rows)} runs to {out}")
    return out


def pm(s: pd.Series) -> str:
    return f"{100 * s.mean():.2f} ± {100 * s.std(ddof=1):.2f}" if len(s) > 1 else f"{100 * s.mean():.2f}"


def experiments() -> None:
    load = lambda n: pd.read_csv(RUNS_CSV / f"{n}.csv") if (RUNS_CSV / f"{n}.csv").exists() else pd.DataFrame()
    exp = load("cifar10-expansion")
    if not exp.empty:
        print("\n### CIFAR-10: expansion N/C = 1 vs 2 (paper preset, residual norm, seeds 0 and 1)\n")
        t = exp.groupby(["model", "expand"]).agg(params=("params", "first"), macs=("macs", "first"),
                                                 seeds=("seed", "count"), acc=("test_acc", pm)).reset_index()
        from mscompare.models import ModelConfig, unit_params

        mob = unit_params(ModelConfig(model="mobilenet", width=32))
        t["unit params / mobilenet"] = [round(unit_params(ModelConfig(model=m, width=32, expand=e)) / mob, 2)
                                        for m, e in zip(t["model"], t["expand"])]
        print(t.to_markdown(index=False))
    tiny = load("tiny-imagenet-subset")
    if not tiny.empty:
        print("\n### Tiny ImageNet subset (200 classes, 10,000 train / 2,000 val images, 3,000 iterations)\n")
        print(tiny[["model", "params", "test_acc", "best_acc", "best_iter", "device"]].assign(
            test_acc=lambda d: (100 * d["test_acc"]).round(2), best_acc=lambda d: (100 * d["best_acc"]).round(2))
              .to_markdown(index=False))
    rerun = load("mnist-residual-norm")
    if not rerun.empty:
        print("\n### MNIST with the residual norm (paper preset, seeds 0 and 1)\n")
        print(rerun.groupby("model")["test_acc"].agg(pm).to_markdown())
    for ds in ("mnist", "cifar10"):
        sweep = load(f"{ds}-width-sweep")
        if not sweep.empty:
            width_sweep(ds, sweep)


def width_sweep(ds: str, sweep: pd.DataFrame) -> None:
    """The accuracy table, the params table, the Pareto frontiers and the three frontier charts of a sweep."""
    import dataclasses
    import json

    from mscompare.config import config_for
    from mscompare.frontier import frontier_chart, mean_over_seeds, pareto, with_latency

    name = {"mnist": "MNIST", "cifar10": "CIFAR-10"}[ds]
    sweep = sweep[(sweep["expand"] == 1) & (sweep["preset"] == "paper")]  # the expansion experiment's N = 2C apart
    if "precision" in sweep:  # the bf16 check's runs apart
        sweep = sweep[sweep["precision"].fillna("fp32") == "fp32"]
    sweep = sweep.assign(model_config=[json.dumps(dataclasses.replace(
        config_for(r.model, r.dataset, units=int(r.units), width=int(r.width), expand=int(r.expand)),
        residual_norm=bool(r.residual_norm)).to_dict()) for r in sweep.itertuples()])
    pts = with_latency(mean_over_seeds(sweep))
    print(f"\n### {name} width sweep: accuracy (%) by unit type and width (mean over seeds)\n")
    wide = pts.pivot_table(index="model", columns="width", values="test_acc") * 100
    print(wide.round(2).to_markdown())
    print("\nSeeds per cell:\n")
    print(pts.pivot_table(index="model", columns="width", values="seeds").fillna(0).astype(int).to_markdown())
    print("\nParams by unit type and width:\n")
    print(pts.pivot_table(index="model", columns="width", values="params").astype("Int64").to_markdown())
    print("\nBatch-1 latency (ms, one thread, this machine) by unit type and width:\n")
    print(pts.pivot_table(index="model", columns="width", values="latency_ms").round(2).to_markdown())
    for cost in ("params", "macs", "latency_ms"):
        f = pareto(pts, cost)
        fmt = (lambda v: f"{v:.2f} ms") if cost == "latency_ms" else (lambda v: f"{int(v):,}")
        print(f"\nPareto frontier by {cost}: " + ", ".join(
            f"{r.model} w{r.width} ({fmt(getattr(r, cost))}, {100 * r.test_acc:.2f}%)" for r in f.itertuples()))
        fig = frontier_chart(pts, cost, f"{name}: test accuracy vs {cost} (paper preset, widths "
                                        f"{pts['width'].min()}-{pts['width'].max()})")
        out = RUNS_CSV.parent / f"{ds}-frontier-{cost.split('_')[0]}"
        fig.write_html(f"{out}.html", include_plotlyjs="cdn")
        try:
            fig.write_image(f"{out}.png", width=900, height=500)
        except Exception as e:  # noqa: BLE001 - PNG needs kaleido and a browser; the HTML is always written
            print(f"(no PNG: {e})", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("paper")
    p.add_argument("--store", default=str(settings.runs_dir()))
    e = sub.add_parser("export")
    e.add_argument("--store", required=True)
    e.add_argument("--name", required=True)
    e.add_argument("--dataset")
    e.add_argument("--tag")
    e.add_argument("--exclude-tag", help="leave out this tag's runs (e.g. bf16-check)")
    sub.add_parser("experiments")
    a = ap.parse_args()
    if a.cmd == "export":
        export(RunStore(a.store), a.name, a.exclude_tag,
               **{k: v for k, v in (("dataset", a.dataset), ("tag", a.tag)) if v})
    elif a.cmd == "experiments":
        experiments()
    else:
        paper(RunStore(getattr(a, "store", settings.runs_dir())))


if __name__ == "__main__":
    main()
