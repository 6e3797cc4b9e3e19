"""Streamlit-side helpers shared by the pages: the one cached Service per app process, and chart builders."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from mscompare.profile import compare
from mscompare.service import Service


NAVIGATION = {"ready": False}  # set by app.py once its st.navigation has run in this server process


def page_setup(page: str) -> None:
    """Send a deep link on a fresh server through app.py. Streamlit runs a `pages/` script directly,
    without app.py's st.navigation, until the main script has run once (its legacy pages/ mode)."""
    if not NAVIGATION["ready"]:
        st.session_state["goto"] = page
        st.switch_page("app.py")


@st.cache_resource
def service() -> Service:
    """One per server process, so runs keep going when a tab closes and show again when it reopens."""
    return Service()


@st.cache_data(show_spinner=False)
def compare_table(dataset: str, units: int, width: int) -> pd.DataFrame:
    return compare(dataset, units, width)


def accuracy_chart(curves: pd.DataFrame, title: str):
    fig = px.line(curves, x="iter", y="test_acc", color="label", markers=len(curves) < 60, title=title,
                  labels={"iter": "iteration", "test_acc": "test accuracy", "label": "run"})
    fig.update_layout(legend=dict(orientation="h", y=-0.25), height=460, yaxis_tickformat=".0%")
    return fig
