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
    """One point per configuration (model, dataset, width, units, expand): accuracy averaged over seeds."""
    keys = [k for k in ("model", "dataset", "width", "units", "expand") if k in runs]
    firsts = [c for c in (*COSTS, "model_config") if c in runs]
    g = runs.groupby(keys, dropna=False)
    out = g[firsts].first().join(g["test_acc"].agg(["mean", "std", "count"]))
    return out.rename(columns={"mean": "test_acc", "std": "acc_std", "count": "seeds"}).reset_index()


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
    """Accuracy against `cost` (log axis), one colour per unit type, the Pareto frontier as a line."""
    import plotly.express as px

    hover = [c for c in ("width", "units", "seeds", "expand") if c in points]
    fig = px.scatter(points, x=cost, y="test_acc", color="model", symbol="dataset" if points["dataset"].nunique() > 1
                     else None, log_x=True, hover_data=hover, title=title,
                     labels={cost: COSTS.get(cost, cost), "test_acc": "test accuracy"})
    for ds, d in points.groupby("dataset"):
        f = pareto(d, cost)
        fig.add_scatter(x=f[cost], y=f["test_acc"], mode="lines", line=dict(color="grey", dash="dot"),
                        name=f"Pareto frontier ({ds})", hoverinfo="skip")
    fig.update_yaxes(tickformat=".1%")
    return fig
