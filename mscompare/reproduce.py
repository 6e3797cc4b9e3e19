"""Reproduce the paper's Tables 3-6 and Figs 5-8: train every model over seeds (resumably), then report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mscompare.config import config_for, preset
from mscompare.datasets import DATASETS
from mscompare.models import list_units
from mscompare.runs import RunStore

def tag_for(dataset: str, preset_name: str) -> str:
    return f"reproduce:{dataset}:{preset_name}"


def plan(dataset: str, models: list[str], seeds: int, preset_name: str = "paper", iters: int | None = None,
         data_root: str = "data", width: int = 32, threads: int = 0) -> list[tuple]:
    """(model_cfg, train_cfg) for every model x seed, seed-major so seed 0 of every model finishes first."""
    out = []
    for seed in range(seeds):
        for m in models:
            tcfg = preset(preset_name, dataset, iters=iters, seed=seed, data_root=data_root, threads=threads)
            out.append((config_for(m, dataset, width=width), tcfg))
    return out


def run_all(store: RunStore, dataset: str, models: list[str] | None = None, seeds: int = 2,
            preset_name: str = "paper", iters: int | None = None, data_root: str = "data", width: int = 32,
            threads: int = 0, checkpoint_dir: str | Path | None = None, log=print, executor: str = "local",
            workers: int = 0, ray_address: str = "auto") -> list[str]:
    """Train whatever of the plan isn't done yet (a finished run of the same protocol on the same device type
    is reused), through the sweep's executors; returns the run ids of the plan."""
    from mscompare.data import load_split
    from mscompare.sweep import Trial, run_trials

    load_split(dataset, data_root, train=False)  # a missing dataset fails before any trial is queued
    trials = [Trial(m, t) for m, t in plan(dataset, models or list_units(), seeds, preset_name, iters, data_root,
                                          width, threads)]
    out = run_trials(store, trials, tag_for(dataset, preset_name), executor, workers, ray_address,
                     on_result=lambda r: log(f"{r['model']} seed {r['seed']}: {r['status']} "
                                             f"test_acc={r['test_acc']} {r['message']}"),
                     checkpoint_dir=checkpoint_dir)
    log(f"{dataset}: {out['done']} trained, {out['failed']} failed, {out['skipped']} already done")
    return out["ids"]


def table(store: RunStore, dataset: str, preset_name: str = "paper") -> pd.DataFrame:
    """Tables 3-6: one row per model with mean +- std accuracy over seeds, beside the paper's number."""
    runs = pd.DataFrame(store.list(tag=tag_for(dataset, preset_name), status="done"))
    if runs.empty:
        return runs
    g = runs.groupby("model")
    df = pd.DataFrame({
        "params": g["params"].first(), "macs": g["macs"].first(), "seeds": g["test_acc"].count(),
        "acc_mean": (g["test_acc"].mean() * 100).round(2), "acc_std": (g["test_acc"].std(ddof=1) * 100).round(2),
        "seconds": g["seconds"].mean().round(0), "images_per_s": g["images_per_s"].mean().round(0),
    }).reset_index()
    df["paper_acc"] = df["model"].map(DATASETS[dataset].paper_acc if dataset in DATASETS else {})
    order = {m: i for i, m in enumerate(list_units())}
    return df.sort_values("model", key=lambda s: s.map(order)).reset_index(drop=True)


def curves(store: RunStore, dataset: str, preset_name: str = "paper") -> pd.DataFrame:
    runs = store.list(tag=tag_for(dataset, preset_name), status="done")
    meta = {r["id"]: (r["model"], r["seed"]) for r in runs}
    pts = pd.DataFrame(store.curves(list(meta)))
    if pts.empty:
        return pts
    pts["model"] = pts["run_id"].map(lambda i: meta[i][0])
    pts["seed"] = pts["run_id"].map(lambda i: meta[i][1])
    return pts


def write_report(store: RunStore, dataset: str, out: str | Path, preset_name: str = "paper") -> dict:
    """Write <out>/<dataset>-<preset>.{csv,md,html[,png]}; returns the paths written."""
    import plotly.express as px

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{dataset}-{preset_name}"
    df = table(store, dataset, preset_name)
    written = {}
    if df.empty:
        return written
    df.to_csv(f"{stem}.csv", index=False)
    (Path(f"{stem}.md")).write_text(df.to_markdown(index=False) + "\n")
    written.update(csv=f"{stem}.csv", md=f"{stem}.md")
    pts = curves(store, dataset, preset_name)
    mean = pts.groupby(["model", "iter"], as_index=False)["test_acc"].mean()
    fig = px.line(mean, x="iter", y="test_acc", color="model",
                  title=f"{dataset}: test accuracy vs iteration ({preset_name} preset, mean over seeds)")
    fig.write_html(f"{stem}.html", include_plotlyjs="cdn")
    written["html"] = f"{stem}.html"
    runs = pd.DataFrame(store.list(tag=tag_for(dataset, preset_name), status="done"))
    cost = cost_chart(runs, f"{dataset}: test accuracy vs cost ({preset_name} preset, every seed)")
    cost.write_html(f"{stem}-cost.html", include_plotlyjs="cdn")
    written["cost_html"] = f"{stem}-cost.html"
    for key, f in (("png", fig), ("cost_png", cost)):
        try:
            f.write_image(f"{stem}{'-cost' if key == 'cost_png' else ''}.png", width=900, height=500)
            written[key] = f"{stem}{'-cost' if key == 'cost_png' else ''}.png"
        except Exception:  # noqa: BLE001 - PNG export needs kaleido + a browser; HTML is always written
            pass
    return written


def cost_chart(runs: pd.DataFrame, title: str):
    """Accuracy against parameters and against MACs, one point per finished run (log x axes)."""
    import plotly.express as px

    from mscompare.charts import accuracy_range, model_colours

    long = runs.melt(id_vars=["model", "dataset", "test_acc", "seed"], value_vars=["params", "macs"],
                     var_name="cost", value_name="count")
    fig = px.scatter(long, x="count", y="test_acc", color="model", symbol="dataset", facet_col="cost",
                     log_x=True, title=title, hover_data=["seed"], labels={"test_acc": "test accuracy"},
                     color_discrete_map=model_colours(runs["model"].unique()))
    fig.update_xaxes(matches=None)
    fig.update_yaxes(tickformat=".1%", range=accuracy_range(runs["test_acc"].min(), runs["test_acc"].max(), False))
    return fig.for_each_annotation(lambda a: a.update(text={"cost=params": "parameters",
                                                            "cost=macs": "MACs per image"}.get(a.text, a.text)))


def ship_checkpoints(store: RunStore, dataset: str, dest: str | Path | None = None, preset_name: str = "paper",
                     seed: int = 0) -> list[dict]:
    """Copy each model's finished seed-`seed` checkpoint into checkpoints/<dataset>/ and update the manifest."""
    import shutil
    import time

    from mscompare.checkpoints import SHIPPED, read_manifest, sha256, write_manifest

    dest = Path(dest or SHIPPED)
    entries = {(e["dataset"], e["model"]): e for e in read_manifest(dest)}
    shipped = []
    for r in store.list(tag=tag_for(dataset, preset_name), status="done", seed=seed):
        if not r["checkpoint"] or not Path(r["checkpoint"]).exists():
            continue
        rel = Path(dataset) / f"{r['model']}.safetensors"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r["checkpoint"], dest / rel)
        e = {"model": r["model"], "dataset": dataset, "file": rel.as_posix(), "iters": r["iters"],
             "preset": preset_name, "seed": seed, "test_acc": round(r["test_acc"], 4), "params": r["params"],
             "date": time.strftime("%Y-%m-%d", time.localtime(r["finished"])), "run_id": r["id"],
             "sha256": sha256(dest / rel)}
        entries[(dataset, r["model"])] = e
        shipped.append(e)
    write_manifest(list(entries.values()), dest)
    return shipped


def runs_frame(store: RunStore, rows: list[dict]) -> pd.DataFrame:
    """One row per run for the committed per-run CSVs: config, device, final accuracy (whole test set), the best
    curve point and the curve at iterations 100 and 1,000; MACs counted here where the run's machine had no fvcore."""
    from mscompare.lifecycle import cost
    from mscompare.models import ModelConfig

    out = []
    for r in rows:
        m = ModelConfig.from_dict(json.loads(r["model_config"]))
        env = json.loads(r["env"] or "{}")
        curve = {p["iter"]: p["test_acc"] for p in store.curve(r["id"])}
        best = max(curve.items(), key=lambda kv: kv[1]) if curve else (None, None)
        macs = r["macs"] if r["macs"] is not None else cost(m)[1]
        out.append({"run_id": r["id"], "model": m.model, "dataset": r["dataset"], "preset": r["preset"],
                    "device": (env.get("gpu") or env.get("device") or ""), "precision": env.get("precision", "fp32"),
                    "seed": r["seed"], "width": m.width,
                    "units": m.units, "expand": m.expand, "residual_norm": m.residual_norm, "iters": r["iters"],
                    "status": r["status"], "test_acc": r["test_acc"], "best_acc": best[1], "best_iter": best[0],
                    "acc_at_100": curve.get(100), "acc_at_1000": curve.get(1000), "params": r["params"],
                    "macs": macs, "seconds": r["seconds"], "images_per_s": r["images_per_s"]})
    return pd.DataFrame(out)
