"""Plotly figures shared by the app and the HTML report: curves with seed bands, confusion, reliability diagrams."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = px.colors.qualitative.Plotly


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
    for i, (label, d) in enumerate(bands.groupby("label", sort=False)):
        c = PALETTE[i % len(PALETTE)]
        for col, (mean, lo, hi) in enumerate((("acc_mean", "acc_min", "acc_max"),
                                              ("loss_mean", "loss_min", "loss_max")), start=1):
            if d["n"].max() > 1:
                fig.add_scatter(x=list(d["iter"]) + list(d["iter"])[::-1], y=list(d[hi]) + list(d[lo])[::-1],
                                fill="toself", fillcolor=_rgba(c, 0.18), line=dict(width=0), hoverinfo="skip",
                                mode="lines",
                                legendgroup=label, showlegend=False, row=1, col=col)
            fig.add_scatter(x=d["iter"], y=d[mean], name=f"{label} (n={d['n'].max()})", legendgroup=label,
                            mode="lines+markers" if len(d) < 60 else "lines", line_color=c, showlegend=col == 1,
                            row=1, col=col)
    if full_scale or bands.empty:
        fig.update_yaxes(range=[0, 1.001], row=1, col=1)
    else:  # zoom to the data, so curves that differ by tenths of a point don't sit on one line
        lo, hi = float(bands["acc_min"].min()), float(bands["acc_max"].max())
        pad = max(0.005, 0.05 * (hi - lo))
        fig.update_yaxes(range=[max(0.0, lo - pad), min(1.001, hi + pad)], row=1, col=1)
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="iteration", rangemode="tozero", tickformat="d")
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
