"""Streamlit-side helpers shared by the pages: the one cached Service per app process, and chart builders."""
from __future__ import annotations

import re
import string

import pandas as pd
import plotly.express as px
import streamlit as st
from plotly.subplots import make_subplots

from mscompare.charts import band_chart, confusion_heatmap, reliability_chart  # noqa: F401 - the pages' charts
from mscompare.profile import cached_profile, compare
from mscompare.service import Service


_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
NAVIGATION = {"ready": False}  # set by app.py once its st.navigation has run in this server process


def page_setup(page: str) -> None:
    """Send a deep link on a fresh server through app.py. Streamlit runs a `pages/` script directly,
    without app.py's st.navigation, until the main script has run once (its legacy pages/ mode)."""
    if not NAVIGATION["ready"]:
        st.session_state["goto"] = page
        st.switch_page("app.py")


def plain(text: str) -> str:
    """User-given text (file names, paths, messages) for a Markdown element: every punctuation mark escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


@st.cache_resource
def service() -> Service:
    """One per server process, so runs keep going when a tab closes and show again when it reopens."""
    return Service()


def yield_to_training() -> None:
    """While runs train on this machine (the app's, a sweep's, or a CLI run's: each training process announces
    itself, threads.announce_training), this page's work (predictions, charts, tables) runs at a lower priority
    so that the runs keep their cores beside a busy browser (issue 15, bench/shared_machine.py). Only this script thread
    is lowered; Streamlit starts a new one for every rerun, and runs are never started from a page that calls
    this (workers and their slot threads come from the Service, created before the first call)."""
    import os

    from mscompare.threads import PAGE_NICE, lower_thread_priority, training_processes

    nice = int(os.environ.get("MSCOMPARE_PAGE_NICE", PAGE_NICE))
    if nice > 0 and (service().training() or training_processes()):
        lower_thread_priority(nice)


@st.cache_data(show_spinner=False, max_entries=1024)
def _latency_ms(cfg_json: str) -> float:
    import json

    from mscompare.models import ModelConfig
    from mscompare.speed import latency_1t_ms

    return latency_1t_ms(ModelConfig.from_dict(json.loads(cfg_json)))


def latencies(points: pd.DataFrame) -> pd.DataFrame:
    """Frontier points plus latency_ms, each configuration measured once per server (about 0.25 s each)."""
    import json

    from mscompare.frontier import with_latency

    with st.spinner(f"Measuring the batch-1 latency of {len(points)} configurations on this machine..."):
        return with_latency(points, lambda cfg: _latency_ms(json.dumps(cfg.to_dict(), sort_keys=True)))


@st.cache_data(show_spinner=False, max_entries=256)
def compare_table(dataset: str, units: int | None, width: int) -> pd.DataFrame:
    return compare(dataset, units, width)


@st.cache_data(show_spinner=False, max_entries=256)
def layer_profile(cfg_dict: dict):
    from mscompare.models import ModelConfig

    p = cached_profile(ModelConfig.from_dict(cfg_dict))
    return p.layers, p.unit_params


def accuracy_chart(curves: pd.DataFrame, title: str):
    """Test accuracy (0-100%) and training loss against iteration, side by side, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "training loss"), horizontal_spacing=0.08)
    colours = px.colors.qualitative.Plotly
    for i, (label, d) in enumerate(curves.groupby("label", sort=False)):
        c = colours[i % len(colours)]
        mode = "lines+markers" if len(d) < 60 else "lines"
        fig.add_scatter(x=d["iter"], y=d["test_acc"], name=label, legendgroup=label, mode=mode,
                        line_color=c, row=1, col=1)
        fig.add_scatter(x=d["iter"], y=d["loss"], name=label, legendgroup=label, mode=mode, line_color=c,
                        showlegend=False, row=1, col=2)
    fig.update_yaxes(range=[0, 1.001], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="iteration", rangemode="tozero", tickformat="d")  # no 99.5 with one point
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), height=460)
    return fig


def per_class_bars(ev: dict, title: str):
    d = pd.DataFrame({"class": ev["classes"], "accuracy": ev["per_class"]})
    fig = px.bar(d, x="class", y="accuracy", title=title)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig.update_layout(height=360)
