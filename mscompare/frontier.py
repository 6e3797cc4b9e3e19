"""Accuracy-per-cost frontiers: the Pareto set of finished runs, and the chart that draws it per unit type."""
from __future__ import annotations

import pandas as pd

COSTS = {"params": "parameters", "macs": "MACs per image (conv + FC)", "latency_ms": "batch-1 latency (ms)"}


def pareto(df: pd.DataFrame, cost: str, acc: str = "test_acc") -> pd.DataFrame:
    """The rows no other row beats on both counts (lower or equal cost and higher accuracy), by cost."""
    d = df.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False])
    keep, best = [], float("-inf")
    for idx, a in zip(d.index, d[acc]):
        if a > best:
            keep.append(idx)
            best = a
    return d.loc[keep]


def mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per configuration of the full protocol (groups.CONFIG_KEYS: model, dataset, preset, iterations,
    units, width, expand, precision, device): accuracy averaged over its seeds, with their std and count.
    Runs of different protocols are never averaged together."""
    from mscompare.groups import group

    g = group(runs)
    return g.rename(columns={"seeds": "seed_list"}).rename(columns={"mean": "test_acc", "std": "acc_std", "n": "seeds"})


def protocols(points: pd.DataFrame) -> list[str]:
    """The distinct training protocols among the points, most points first (for a chooser)."""
    keys = points.apply(protocol_label, axis=1)
    return list(keys.value_counts().index)


def protocol_label(row) -> str:
    return f"{row['preset']}, {int(row['iters']):,} iterations, {row['precision']}, {row['device_type']}"


def mark(points: pd.DataFrame, cost: str, alpha: float = 0.05) -> pd.DataFrame:
    """Each point's place against the Pareto frontier of its dataset: "frontier", "within spread" (every frontier
    point that beats it does so by a difference Welch's t-test over seeds can't tell from 0 at `alpha`), "below",
    or "spread unknown" (one seed on a side)."""
    from scipy.stats import ttest_ind_from_stats

    out = points.copy()
    out["place"] = "below"
    for _, d in out.groupby("dataset"):
        front = pareto(d, cost)
        out.loc[front.index, "place"] = "frontier"
        for idx, p in d.drop(front.index).iterrows():
            beaters = front[(front[cost] <= p[cost]) & (front["test_acc"] > p["test_acc"])]
            if beaters.empty:
                continue
            if p["seeds"] < 2 or (beaters["seeds"] < 2).any():
                out.loc[idx, "place"] = "spread unknown"
                continue
            ps = [ttest_ind_from_stats(f["test_acc"], f["acc_std"], f["seeds"], p["test_acc"], p["acc_std"],
                                       p["seeds"], equal_var=False).pvalue for _, f in beaters.iterrows()]
            if all(v != v or v >= alpha for v in ps):  # nan: both without spread and equal
                out.loc[idx, "place"] = "within spread"
    return out


def with_latency(points: pd.DataFrame, measure=None) -> pd.DataFrame:
    """`points` (with a model_config JSON column) plus latency_ms: each configuration's batch-1 latency,
    one thread, measured on this machine now (speed.latency_1t_ms); the same configuration is measured once."""
    import json

    from mscompare.models import ModelConfig
    from mscompare.speed import latency_1t_ms

    measure = measure or latency_1t_ms
    seen: dict[str, float] = {}
    out = points.copy()
    lat = []
    for cfg in out["model_config"]:
        key = json.dumps(json.loads(cfg), sort_keys=True)
        if key not in seen:
            seen[key] = measure(ModelConfig.from_dict(json.loads(cfg)))
        lat.append(seen[key])
    out["latency_ms"] = lat
    return out


def frontier_chart(points: pd.DataFrame, cost: str, title: str):
    """Accuracy against `cost` (log axis), one colour per unit type, ± std error bars over seeds, the Pareto
    frontier as a line; points within the seed spread of the frontier are drawn as open diamonds."""
    import plotly.express as px

    from mscompare.charts import model_colours

    pts = mark(points, cost) if "place" not in points else points
    hover = [c for c in ("width", "units", "seeds", "expand", "preset", "iters", "precision", "place") if c in pts]
    fig = px.scatter(pts, x=cost, y="test_acc", color="model", symbol="place", log_x=True, hover_data=hover,
                     error_y="acc_std" if "acc_std" in pts else None, title=title,
                     color_discrete_map=model_colours(pts["model"].unique()),
                     symbol_map={"frontier": "circle", "within spread": "diamond-open", "below": "x",
                                 "spread unknown": "circle-open"},
                     labels={cost: COSTS.get(cost, cost), "test_acc": "test accuracy", "place": "vs frontier",
                             "seeds": "n (seeds)"})
    for ds, d in pts.groupby("dataset"):
        f = pareto(d, cost)
        fig.add_scatter(x=f[cost], y=f["test_acc"], mode="lines", line=dict(color="grey", dash="dot"),
                        name=f"Pareto frontier ({ds})", hoverinfo="skip")
    fig.update_yaxes(tickformat=".1%")
    return fig
