"""Configurations and their seeds: grouping finished runs by the full protocol, and the paired comparison of two
runs or two configurations on the same test images."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mscompare.checkpoints import read_meta

# What makes runs repeats of one configuration (seeds aside). Precision and device are what the run used.
CONFIG_KEYS = ["model", "dataset", "preset", "iters", "units", "width", "expand", "precision", "device_type"]


class CompareError(ValueError):
    """Two sets of runs that can't be compared (different test sets or classes, unfinished runs)."""


def describe(runs: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Runs (store rows, or an exported CSV's rows) plus the configuration columns: expand, precision and
    device_type from the run's JSON where they aren't columns already, and defaults for what an export lacks."""
    df = pd.DataFrame(runs).copy()
    if df.empty:
        return pd.DataFrame(columns=[*df.columns, *CONFIG_KEYS])
    parse = lambda col: [json.loads(c) if isinstance(c, str) and c else {} for c in df[col]] if col in df else [{}] * len(df)  # noqa: E731
    mc, tc, env = parse("model_config"), parse("train_config"), parse("env")
    defaults = {"status": "done", "seed": 0, "preset": "", "iters": 0, "images_per_s": float("nan"),
                "params": pd.NA, "macs": pd.NA, "model_config": "{}"}
    for col, value in defaults.items():
        if col not in df:
            df[col] = value
    if "id" not in df:
        df["id"] = [f"row-{i}" for i in range(len(df))]
    if "expand" not in df:
        df["expand"] = [m.get("expand", 1) for m in mc]
    if "precision" not in df:
        df["precision"] = [e.get("precision") or t.get("precision", "fp32") for e, t in zip(env, tc)]
    df["precision"] = df["precision"].fillna("fp32")
    if "device_type" not in df:  # the device a run used (its env); a stored request of "auto" counts as cpu
        asked = df["device"].astype(str) if "device" in df else pd.Series(["cpu"] * len(df), index=df.index)
        used = [(e.get("device") or a).split(":")[0] for e, a in zip(env, asked)]
        df["device_type"] = ["cpu" if d in ("auto", "None", "nan", "") else d for d in used]
    df["fused"] = [e.get("fused", 1) for e in env]
    return df


def config_label(row) -> str:
    """One configuration in one line: what differs between the configurations a user compares."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    bits = [str(get("model")), str(get("dataset")), f"{get('preset')} {int(get('iters')):,} it",
            f"w{int(get('width'))}", f"{int(get('units'))} units"]
    if get("expand", 1) not in (1, None):
        bits.append(f"x{get('expand')}")
    if get("precision", "fp32") != "fp32":
        bits.append(str(get("precision")))
    if get("device_type", "cpu") != "cpu":
        bits.append(str(get("device_type")))
    return " · ".join(bits)


def run_label(row) -> str:
    """One run in one line, the same on every page: its configuration (config_label), seed, accuracy where it
    has one, and its id's random tail."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    acc = get("test_acc")
    bits = [config_label(row), f"seed {int(get('seed') or 0)}"]
    if acc is not None and acc == acc:
        bits.append(f"{100 * float(acc):.2f}%")
    return " · ".join(bits + [str(get("id"))[-6:]])


def run_labels(runs: pd.DataFrame | list[dict]) -> dict[str, str]:
    """run_label of each run (store rows, whose JSON gives expand, precision and device), by run id."""
    df = describe(runs)
    return {r["id"]: run_label(r) for r in df.to_dict("records")}


def best_per_model(runs: list[dict]) -> list[str]:
    """The most accurate finished run of each model on the dataset of the newest run: a default choice of runs."""
    if not runs:
        return []
    dataset = max(runs, key=lambda r: r.get("created") or 0)["dataset"]
    best: dict[str, dict] = {}
    for r in runs:
        if r["dataset"] == dataset and r.get("test_acc") is not None and (
                r["model"] not in best or r["test_acc"] > best[r["model"]]["test_acc"]):
            best[r["model"]] = r
    return [best[m]["id"] for m in sorted(best)]


def group(runs: pd.DataFrame | list[dict], finished: bool = True) -> pd.DataFrame:
    """One row per configuration over its finished runs (all its runs with `finished` False, for live curves):
    n seeds, mean, std (sample, n-1), min and max accuracy, params, MACs, images/s and the run ids. Runs of
    different protocols are never averaged together."""
    df = describe(runs)
    out_cols = [*CONFIG_KEYS, "label", "n", "mean", "std", "min", "max", "params", "macs", "images_per_s",
                "seeds", "runs", "model_config"]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    if finished:
        df = df[df["status"] == "done"]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    g = df.groupby(CONFIG_KEYS, dropna=False, sort=False)
    out = g["test_acc"].agg(["count", "mean", "std", "min", "max"]).rename(columns={"count": "n"})
    out = out.join(g[["params", "macs", "model_config"]].first()).join(g["images_per_s"].mean())
    out["seeds"] = g["seed"].agg(lambda s: sorted(int(v) for v in s))
    out["runs"] = g["id"].agg(list)
    out = out.reset_index()
    out["label"] = [config_label(r) for r in out.to_dict("records")]
    return out[out_cols]


def _check_same_test_set(store, ids: list[str], preds) -> None:
    rows = {r["id"]: r for r in store.list(ids=ids)}
    missing = [rid for rid in ids if rid not in rows]
    if missing:
        raise CompareError(f"no run {missing[0]!r} in {store.path}")
    ref_id, ref = ids[0], preds[0]
    for rid, p in zip(ids[1:], preds[1:]):
        if rows[rid]["dataset"] != rows[ref_id]["dataset"]:
            raise CompareError(f"runs {ref_id} and {rid} were tested on different datasets "
                               f"({rows[ref_id]['dataset']} and {rows[rid]['dataset']}); compare runs on one test set")
        if len(p.true) != len(ref.true) or not np.array_equal(p.true, ref.true):
            raise CompareError(f"runs {ref_id} and {rid} were tested on different test sets ({len(ref.true):,} and "
                               f"{len(p.true):,} images, or other labels); compare runs on one test set")
    classes = {rid: read_meta(rows[rid].get("checkpoint")).get("classes") for rid in ids}
    known = {rid: c for rid, c in classes.items() if c is not None}
    if len({json.dumps(c) for c in known.values()}) > 1:
        a, b = list(known)[:2]
        raise CompareError(f"runs {a} and {b} have different class lists ({known[a][:4]}... and {known[b][:4]}...)")


def compare(store, a_ids: list[str], b_ids: list[str], names: tuple[str, str] | None = None) -> dict:
    """Is A better than B on the same test images? A and B are lists of finished runs (seeds of one
    configuration each). The CI is the paired bootstrap over test images for one run per side, and the two-level
    bootstrap over seeds and images otherwise (mscompare.stats); McNemar's exact p is given per seed pair."""
    from mscompare import stats

    if not a_ids or not b_ids:
        raise CompareError("give at least one run on each side")
    if set(a_ids) & set(b_ids):
        raise CompareError(f"run {sorted(set(a_ids) & set(b_ids))[0]} is on both sides")
    from mscompare.predictions import load

    preds = [load(store, rid) for rid in [*a_ids, *b_ids]]
    _check_same_test_set(store, [*a_ids, *b_ids], preds)
    a = np.stack([p.correct for p in preds[:len(a_ids)]])
    b = np.stack([p.correct for p in preds[len(a_ids):]])
    acc_a, acc_b = a.mean(1), b.mean(1)
    diff = float(acc_a.mean() - acc_b.mean())
    if len(a) == 1 and len(b) == 1:
        ci, method = stats.paired_bootstrap_ci(a[0], b[0]), "paired bootstrap over test images"
    else:
        ci, method = stats.seeds_and_images_ci(a, b), "two-level bootstrap over seeds and test images"
    rows = {r["id"]: r for r in store.list(ids=[*a_ids, *b_ids])}
    names = names or (_side_name(rows, a_ids), _side_name(rows, b_ids))
    pairs = list(zip(a_ids, b_ids)) if len(a_ids) == len(b_ids) else [(x, y) for x in a_ids for y in b_ids]
    index = {rid: i for i, rid in enumerate([*a_ids, *b_ids])}
    correct = [p.correct for p in preds]
    return {"a": _side(a_ids, acc_a, names[0]), "b": _side(b_ids, acc_b, names[1]), "diff": 100 * diff, "ci": [100 * ci[0], 100 * ci[1]],
            "p_mcnemar": [stats.mcnemar_exact(correct[index[x]], correct[index[y]]) for x, y in pairs],
            "pairs": [list(p) for p in pairs], "verdict": stats.verdict(ci), "method": method,
            "images": int(a.shape[1]),
            "sentence": stats.sentence(names[0], names[1], diff, ci, len(a), len(b), int(a.shape[1]))}


def _side(ids: list[str], acc: np.ndarray, name: str) -> dict:
    return {"name": name, "n": len(ids), "mean": 100 * float(acc.mean()),
            "std": 100 * float(acc.std(ddof=1)) if len(acc) > 1 else None, "runs": list(ids),
            "accuracies": [100 * float(v) for v in acc]}


def _side_name(rows: dict, ids: list[str]) -> str:
    models = list(dict.fromkeys(rows[r]["model"] for r in ids))
    return "+".join(models)


def against_reference(store, groups: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Every configuration of `groups` against the one labelled `reference`: Δ (points), CI, verdict, sentence."""
    ref = groups[groups["label"] == reference]
    if ref.empty:
        raise CompareError(f"no configuration {reference!r} among the finished runs")
    ref_row = ref.iloc[0]
    out = []
    for r in groups.itertuples():
        if r.label == reference:
            continue
        try:
            c = compare(store, list(r.runs), list(ref_row["runs"]), names=(r.model, ref_row["model"]))
            out.append({"label": r.label, "delta": c["diff"], "ci_low": c["ci"][0], "ci_high": c["ci"][1],
                        "verdict": c["verdict"], "sentence": c["sentence"]})
        except Exception as e:  # noqa: BLE001 - one configuration that can't be compared doesn't hide the rest
            out.append({"label": r.label, "delta": None, "ci_low": None, "ci_high": None, "verdict": "n/a",
                        "sentence": str(e)})
    return pd.DataFrame(out, columns=["label", "delta", "ci_low", "ci_high", "verdict", "sentence"])
