"""Corruption robustness of finished runs and checkpoints: accuracy on the own test set under the corruption suite
(mscompare.corruptions) at each severity, stored once per suite version and seed as `<runs_dir>/robustness/<id>.json`
and deleted with the run; summaries over seeds for the Runs page."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


class RobustnessError(RuntimeError):
    """A run or checkpoint can't be evaluated (unknown, unfinished, no checkpoint); the message names it."""


def path_for(runs_dir: str | Path, rid: str) -> Path:
    return Path(runs_dir) / "robustness" / f"{rid}.json"


def delete(runs_dir: str | Path, rid: str) -> None:
    path_for(runs_dir, rid).unlink(missing_ok=True)


def key(seed: int) -> str:
    """What a stored result is valid for: the suite's version and the corruption seed."""
    from mscompare.corruptions import VERSION

    return f"suite-v{VERSION}-seed{int(seed)}"


def summarize(clean: float, corruptions: dict[str, list[float]]) -> dict:
    """clean, the mean over every corruption and severity, and the drop relative to clean (0.25: a quarter lost)."""
    mean = float(np.mean([a for accs in corruptions.values() for a in accs]))
    return {"clean": clean, "mean_corruption": mean,
            "relative_drop": (clean - mean) / clean if clean > 0 else 0.0, "corruptions": corruptions}


def evaluate(models: list, test, seed: int = 0, progress=None) -> list[dict]:
    """Accuracy of each (model, mean, std) on `test` (an ArrayData) clean and under every corruption of its suite at
    severities 1-5. Each corrupted test set is made once and shared by all models (the same images for each);
    normalization is each model's own, applied after corrupting. `progress(k)` is called as k steps (one model's
    pass over one test set, see steps) finish."""
    import torch

    from mscompare import corruptions as C
    from mscompare.data import Batches

    cpu = torch.device("cpu")
    batches = [(m.eval(), Batches(test, mean, std, cpu)) for m, mean, std in models]

    def correct(x: torch.Tensor, y: torch.Tensor) -> list[int]:
        with torch.inference_mode():
            return [int((m(b.prep(x)).argmax(1) == y).sum()) for m, b in batches]

    n = len(test.y)
    clean = np.zeros(len(models))
    for i in range(0, n, C.CHUNK):
        clean += correct(test.x[i:i + C.CHUNK], test.y[i:i + C.CHUNK])
    if progress:
        progress(len(models))
    table = {name: np.zeros((len(models), len(C.SEVERITIES))) for name in C.suite(test.x.shape[-1])}
    for name, acc in table.items():
        for s in C.SEVERITIES:
            gen = C.generator(seed, name, s)
            for i in range(0, n, C.CHUNK):
                acc[:, s - 1] += correct(C.corrupt(test.x[i:i + C.CHUNK], name, s, gen), test.y[i:i + C.CHUNK])
            if progress:
                progress(len(models))
    return [summarize(float(clean[j] / n), {name: [float(v) for v in acc[j] / n] for name, acc in table.items()})
            for j in range(len(models))]


def steps(channels: int) -> int:
    """Progress steps of one evaluation: the clean pass and each corruption at each severity."""
    from mscompare import corruptions as C

    return 1 + len(C.suite(channels)) * len(C.SEVERITIES)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # unreadable or half-written by a crash: recomputed
        return {}


def stored(runs_dir: str | Path, rid: str, seed: int = 0) -> dict | None:
    """The run's stored result for the current suite and `seed`, or None."""
    return _read(path_for(runs_dir, rid)).get(key(seed))


def _save(runs_dir: str | Path, rid: str, seed: int, result: dict) -> None:
    """Add this suite version's and seed's result to the run's file, atomically."""
    path = path_for(runs_dir, rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    data[key(seed)] = result
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _check(store, ids: list[str]) -> dict[str, dict]:
    rows = {r["id"]: r for r in store.list(ids=list(ids))}
    for rid in ids:
        row = rows.get(rid)
        if row is None:
            raise RobustnessError(f"no run {rid!r} in {store.path}")
        if row["status"] != "done":
            raise RobustnessError(f"run {rid} is {row['status']}, not done: only finished runs can be evaluated")
        if not row.get("checkpoint") or not Path(row["checkpoint"]).is_file():
            raise RobustnessError(f"run {rid} has no checkpoint file ({row.get('checkpoint') or 'none stored'}) "
                                  f"to evaluate")
    return rows


def _load_test(dataset: str, data_root: str, tcfg: dict):
    from mscompare.data import load_split

    return load_split(dataset, data_root, train=False, size=tcfg.get("image_size") or None,
                      skip_bad=tcfg.get("skip_bad", False))


def for_runs(store, ids: list[str], seed: int = 0, data_root: str | None = None, progress=None,
             compute: bool = True) -> list[dict]:
    """The robustness of each finished run (store order of `ids`): stored results where the suite and seed match,
    else computed from the run's checkpoint on its test set (from `data_root`, else the root it trained on) and
    stored. Runs on one test set are evaluated together on the same corrupted images. With compute False, runs
    without a stored result are left out. Each result: run_id, model, dataset, clean, mean_corruption,
    relative_drop, corruptions {name: [accuracy at severity 1..5]}, suite."""
    from mscompare.checkpoints import load_checkpoint

    ids = list(dict.fromkeys(ids))
    rows = _check(store, ids)
    done = {rid: r for rid in ids if (r := stored(store.dir, rid, seed)) is not None}
    pending: dict[tuple, list[str]] = {}
    for rid in ids:
        if rid not in done and compute:
            tcfg = json.loads(rows[rid]["train_config"])
            where = (rows[rid]["dataset"], data_root or tcfg.get("data_root"), tcfg.get("image_size") or 0,
                     bool(tcfg.get("skip_bad")))
            pending.setdefault(where, []).append(rid)
    for (dataset, root, _, _), group in pending.items():
        test = _load_test(dataset, root, json.loads(rows[group[0]]["train_config"]))
        models = []
        for rid in group:
            model, _, meta = load_checkpoint(rows[rid]["checkpoint"])
            models.append((model, meta["norm"]["mean"], meta["norm"]["std"]))
        for rid, res in zip(group, evaluate(models, test, seed, progress)):
            done[rid] = {"run_id": rid, "model": rows[rid]["model"], "dataset": dataset, **res,
                         "suite": key(seed)}
            _save(store.dir, rid, seed, done[rid])
    return [done[rid] for rid in ids if rid in done]


def pending_steps(store, ids: list[str], seed: int = 0) -> int:
    """How many progress steps for_runs will take (0 when every result is stored)."""
    rows = _check(store, ids)
    todo = [rows[r] for r in dict.fromkeys(ids) if stored(store.dir, r, seed) is None]
    return sum(steps(json.loads(r["model_config"]).get("in_channels", 3)) for r in todo)


def for_checkpoints(paths: list[str | Path], data_root: str, seed: int = 0, progress=None) -> list[dict]:
    """The robustness of checkpoint files (the shipped ones, say) on their datasets' test splits, checkpoints of
    one dataset together on the same corrupted images; not stored."""
    from mscompare.checkpoints import load_checkpoint

    groups: dict[str, list] = {}
    for path in paths:
        model, cfg, meta = load_checkpoint(path)
        if not meta.get("dataset") or "norm" not in meta:
            raise RobustnessError(f"{path} does not record its dataset and normalization, so its test set is unknown")
        groups.setdefault(meta["dataset"], []).append((str(path), model, cfg, meta))
    out = {}
    for dataset, group in groups.items():
        test = _load_test(dataset, data_root, {})
        res = evaluate([(m, meta["norm"]["mean"], meta["norm"]["std"]) for _, m, _, meta in group], test, seed,
                       progress)
        for (path, _, cfg, meta), r in zip(group, res):
            out[path] = {"run_id": meta.get("run_id") or path, "model": cfg.model, "dataset": dataset, **r,
                         "suite": key(seed), "checkpoint": path}
    return [out[str(p)] for p in paths]


def by_config(results: list[dict], run_label: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results of runs grouped by configuration label: (curves, table). curves: label, corruption, severity 0-5
    (0: clean), mean, std (sample, over seeds; NaN for one seed), n. table: label, n, clean, mean corruption and
    relative drop, each mean ± std over seeds."""
    curves, rows = [], []
    for label in dict.fromkeys(run_label[r["run_id"]] for r in results):
        mine = [r for r in results if run_label[r["run_id"]] == label]
        std = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")  # noqa: E731
        for name in mine[0]["corruptions"]:
            for s in range(6):
                v = [r["clean"] if s == 0 else r["corruptions"][name][s - 1] for r in mine]
                curves.append({"label": label, "corruption": name, "severity": s, "mean": float(np.mean(v)),
                               "std": std(v), "n": len(v)})
        row = {"label": label, "n": len(mine)}
        for k in ("clean", "mean_corruption", "relative_drop"):
            v = [r[k] for r in mine]
            row[k], row[f"{k}_std"] = float(np.mean(v)), std(v)
        rows.append(row)
    return pd.DataFrame(curves), pd.DataFrame(rows)


def panel(store, run_label: dict[str, str], seed: int = 0, compute: bool = False):
    """The Runs page's robustness panel over the runs of `run_label` (run id -> configuration label): (curves,
    table, missing), from stored results, computing the missing ones first with `compute`; `missing` lists the runs
    still without a result."""
    res = for_runs(store, list(run_label), seed, compute=compute)
    have = {r["run_id"] for r in res}
    missing = [rid for rid in run_label if rid not in have]
    if not res:
        return pd.DataFrame(), pd.DataFrame(), missing
    return (*by_config(res, run_label), missing)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The panel's table for display: percentages as mean ± std over seeds, or the one seed's value."""
    def cell(r, k, digits=2):
        v = f"{100 * r[k]:.{digits}f}"
        return v + (f" ± {100 * r[k + '_std']:.{digits}f}" if r["n"] > 1 else "")
    return pd.DataFrame({"configuration": table["label"], "seeds": table["n"],
                         "clean %": [cell(r, "clean") for _, r in table.iterrows()],
                         "mean under corruption %": [cell(r, "mean_corruption") for _, r in table.iterrows()],
                         "relative drop %": [cell(r, "relative_drop", 1) for _, r in table.iterrows()]})


def chart(curves: pd.DataFrame, title: str = "Accuracy vs corruption severity"):
    """One panel per corruption: accuracy against severity (0: clean) per configuration, error bars ± std over
    seeds where a configuration has several."""
    from plotly.subplots import make_subplots

    from mscompare.charts import label_model, line_styles

    names = list(dict.fromkeys(curves["corruption"]))
    cols = 4
    fig = make_subplots(rows=-(-len(names) // cols), cols=cols, subplot_titles=[n.replace("_", " ") for n in names],
                        shared_yaxes=True, vertical_spacing=0.12)
    style = line_styles(list(dict.fromkeys(curves["label"])), label_model)  # each model's colour on every page
    for label, d in curves.groupby("label", sort=False):
        for k, name in enumerate(names):
            e = d[d["corruption"] == name]
            err = dict(type="data", array=e["std"].fillna(0).tolist(), visible=bool(e["n"].max() > 1))
            fig.add_scatter(x=e["severity"], y=e["mean"], error_y=err, mode="lines+markers",
                            name=f"{label} (n={e['n'].max()})", legendgroup=label, showlegend=k == 0,
                            line=dict(color=style[label][0], dash=style[label][1]), row=k // cols + 1,
                            col=k % cols + 1)
    fig.update_yaxes(range=[0, 1.001], tickformat=".0%")
    fig.update_xaxes(tickvals=list(range(6)))
    fig.update_layout(title=title, height=260 * (-(-len(names) // cols)) + 120,
                      legend=dict(orientation="h", y=-0.12))
    return fig


def table_text(results: list[dict]) -> str:
    """The CLI's plain table: per run clean, mean corruption and drop, then accuracy per corruption and severity."""
    lines = []
    for r in results:
        lines.append(f"{r['run_id']} ({r['model']} on {r['dataset']}): clean {100 * r['clean']:.2f}%, "
                     f"mean under corruption {100 * r['mean_corruption']:.2f}%, "
                     f"relative drop {100 * r['relative_drop']:.1f}%")
        lines.append(f"  {'corruption':16s}" + "".join(f"{f'sev {s}':>8s}" for s in range(1, 6)))
        for name, accs in r["corruptions"].items():
            lines.append(f"  {name:16s}" + "".join(f"{100 * a:7.2f}%" for a in accs))
    return "\n".join(lines)
