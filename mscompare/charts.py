"""Plotly figures for the app and the HTML report: seed bands, confusion, reliability, layer time against MACs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = px.colors.qualitative.Plotly
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def model_colour(model: str) -> str:
    """The one colour of a model on every page and chart: by its place among the registered units, so alexnet
    is the same blue on the Train, Sweep, Runs and Architectures pages whichever models a chart shows."""
    from mscompare.models import list_units

    units = list_units()
    i = units.index(model) if model in units else len(units) + sum(map(ord, str(model)))
    return PALETTE[i % len(PALETTE)]


def model_colours(models=None) -> dict[str, str]:
    """model -> colour for plotly express's color_discrete_map (every registered unit by default)."""
    from mscompare.models import list_units

    return {m: model_colour(m) for m in (models if models is not None else list_units())}


def line_styles(labels, model_of) -> dict[str, tuple[str, str]]:
    """Each label's (colour, dash): its model's colour; a second configuration of one model gets another dash."""
    seen: dict[str, int] = {}
    out = {}
    for label in labels:
        m = model_of(label)
        out[label] = (model_colour(m), DASHES[seen.get(m, 0) % len(DASHES)])
        seen[m] = seen.get(m, 0) + 1
    return out


def label_model(label: str) -> str:
    """The model a run or configuration label (groups.config_label, groups.run_label) names first."""
    return str(label).split(" · ")[0]


def accuracy_range(lo: float, hi: float, full_scale: bool) -> list[float]:
    """The y range of an accuracy axis (0-1): zoomed to the data with a little room, or the full 0-100%. Above
    100% only a tenth of the room, so a point at 100% shows and no tick reads more than 100%."""
    if full_scale or lo != lo or hi != hi:
        return [0, 1.001]
    pad = max(0.005, 0.05 * (hi - lo))
    return [max(0.0, lo - pad), min(1 + pad / 10, hi + pad)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def band_curves(curves: pd.DataFrame, run_label: dict[str, str]) -> pd.DataFrame:
    """Long-form curves (run_id, iter, test_acc, loss) to one row per configuration label and iteration:
    the mean, min and max over its runs (seeds), and n."""
    df = curves.assign(label=curves["run_id"].map(run_label)).dropna(subset=["label"])
    g = df.groupby(["label", "iter"], sort=False)
    out = g.agg(acc_mean=("test_acc", "mean"), acc_min=("test_acc", "min"), acc_max=("test_acc", "max"),
                loss_mean=("loss", "mean"), loss_min=("loss", "min"), loss_max=("loss", "max"),
                n=("run_id", "nunique"))
    return out.reset_index()


def band_chart(bands: pd.DataFrame, title: str, full_scale: bool = False):
    """Test accuracy and training loss against iteration: the mean over seeds as a line, min-max as a band."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy (mean, band: min-max over seeds)",
                                                        "training loss"), horizontal_spacing=0.08)
    styles = line_styles(bands["label"].unique(), label_model)
    for label, d in bands.groupby("label", sort=False):
        c, dash = styles[label]
        for col, (mean, lo, hi) in enumerate((("acc_mean", "acc_min", "acc_max"),
                                              ("loss_mean", "loss_min", "loss_max")), start=1):
            if d["n"].max() > 1:
                fig.add_scatter(x=list(d["iter"]) + list(d["iter"])[::-1], y=list(d[hi]) + list(d[lo])[::-1],
                                fill="toself", fillcolor=_rgba(c, 0.18), line=dict(width=0), hoverinfo="skip",
                                mode="lines",
                                legendgroup=label, showlegend=False, row=1, col=col)
            fig.add_scatter(x=d["iter"], y=d[mean], name=f"{label} (n={d['n'].max()})", legendgroup=label,
                            mode="lines+markers" if len(d) < 60 else "lines", line=dict(color=c, dash=dash),
                            showlegend=col == 1, row=1, col=col)
    # zoomed to the data unless asked, so curves that differ by tenths of a point don't sit on one line
    fig.update_yaxes(range=accuracy_range(float(bands["acc_min"].min()) if len(bands) else float("nan"),
                                          float(bands["acc_max"].max()) if len(bands) else float("nan"),
                                          full_scale), row=1, col=1)
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="iteration", rangemode="tozero", tickformat="d")
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), height=460)
    return fig


def curves_chart(curves: pd.DataFrame, title: str, full_scale: bool = False):
    """Single runs' test accuracy and training loss against iteration, side by side: each run in its model's
    colour (`model` column, else the label's first word), a second run of one model in another dash."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "training loss"), horizontal_spacing=0.08)
    model_of = dict(zip(curves["label"], curves["model"])) if "model" in curves else {}
    styles = line_styles(curves["label"].unique(), lambda lbl: model_of.get(lbl) or label_model(lbl))
    for label, d in curves.groupby("label", sort=False):
        c, dash = styles[label]
        mode = "lines+markers" if len(d) < 60 else "lines"
        fig.add_scatter(x=d["iter"], y=d["test_acc"], name=label, legendgroup=label, mode=mode,
                        line=dict(color=c, dash=dash), row=1, col=1)
        fig.add_scatter(x=d["iter"], y=d["loss"], name=label, legendgroup=label, mode=mode,
                        line=dict(color=c, dash=dash), showlegend=False, row=1, col=2)
    acc = curves["test_acc"].astype(float)
    fig.update_yaxes(range=accuracy_range(acc.min(), acc.max(), full_scale or acc.empty), tickformat=".1%",
                     row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="iteration", rangemode="tozero", tickformat="d")  # no 99.5 with one point
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), height=460)
    return fig


def confusion_heatmap(ev: dict, title: str):
    """The confusion matrix normalized per true class (row), raw counts on hover."""
    cm = np.array(ev["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = ev["classes"]
    fig = go.Figure(go.Heatmap(z=norm, x=names, y=names, customdata=cm.astype(int), colorscale="Blues", zmin=0,
                               zmax=1, hovertemplate="true %{y}, predicted %{x}: %{customdata} images "
                                                     "(%{z:.1%} of the class)<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      height=460)
    return fig


def reliability_chart(cal: dict, title: str):
    """Accuracy against mean confidence per confidence bin (bar width: the bin), the diagonal as perfect
    calibration, and the bin counts on hover; the ECE in the title."""
    bins = cal["bins"]
    centers = (np.arange(bins) + 0.5) / bins
    acc = [a if a is not None else 0 for a in cal["accuracy"]]
    fig = go.Figure()
    fig.add_bar(x=centers, y=acc, width=1 / bins, name="accuracy in bin", marker_color=PALETTE[0],
                customdata=np.stack([cal["count"], [c if c is not None else np.nan for c in cal["confidence"]]], 1),
                hovertemplate="confidence %{x:.2f}: accuracy %{y:.1%}, mean confidence %{customdata[1]:.1%}, "
                              "%{customdata[0]} images<extra></extra>")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"), name="calibrated")
    fig.update_layout(title=f"{title} (ECE {cal['ece']:.3f})", xaxis_title="confidence", yaxis_title="accuracy",
                      xaxis_range=[0, 1], yaxis_range=[0, 1], height=380, legend=dict(orientation="h", y=-0.3))
    return fig


KIND_PALETTE = px.colors.qualitative.Dark24
LAYER_KINDS = ("3x3 conv", "5x5 conv", "pointwise 1x1 conv", "depthwise 3x3 conv", "BatchNorm", "ReLU", "max-pool",
               "linear", "identity")  # layertime.layer_kind's names; the own-ops kinds take the colours after these


def layer_time_chart(df: pd.DataFrame, title: str):
    """Each layer's share of the forward time against its share of MACs (layertime.breakdown), one panel per
    batch, one colour per kind of layer, with the y = x diagonal: above it a layer takes more of the time than
    of the arithmetic (memory-bound: depthwise, BatchNorm, pooling, concatenation)."""
    batches = df.attrs.get("batches") or [int(c.removeprefix("ms_b")) for c in df.columns if c.startswith("ms_b")]
    long = pd.concat([df.assign(batch=f"batch {b}", time_share=df[f"time_share_b{b}"], ms=df[f"ms_b{b}"])
                      for b in batches], ignore_index=True)
    kinds = list(LAYER_KINDS) + sorted(set(long["kind"]) - set(LAYER_KINDS))
    fig = px.scatter(long, x="mac_share", y="time_share", color="kind", facet_col="batch", hover_name="layer",
                     hover_data={"ms": ":.3f", "macs": ":,", "batch": False}, title=title,
                     color_discrete_map={k: KIND_PALETTE[i % len(KIND_PALETTE)] for i, k in enumerate(kinds)},
                     category_orders={"kind": [k for k in kinds if k in set(long["kind"])]},
                     labels={"mac_share": "share of MACs (conv + linear)", "time_share": "share of forward time"})
    top = max(long["mac_share"].max(), long["time_share"].max()) * 1.05
    for i in range(len(batches)):
        fig.add_shape(type="line", x0=0, y0=0, x1=top, y1=top, line=dict(dash="dot", color="grey"),
                      row=1, col=i + 1)
    fig.update_xaxes(range=[-0.01, top], tickformat=".0%").update_yaxes(range=[-0.01, top], tickformat=".0%")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_traces(marker=dict(size=9, opacity=0.8)).update_layout(height=440)
