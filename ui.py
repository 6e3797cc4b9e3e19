"""Streamlit-side helpers shared by the pages: the one cached Service per app process, and chart builders."""
from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

import pandas as pd
import plotly.express as px
import streamlit as st

from mscompare.charts import band_chart, confusion_heatmap, reliability_chart  # noqa: F401 - the pages' charts

if TYPE_CHECKING:
    from mscompare.service import Service

MISSING = "—"  # every table's empty cell (st.dataframe's placeholder; Streamlit's own is the word "None")
_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
NAVIGATION = {"ready": False}  # set by app.py once its st.navigation has run in this server process
# The pages in navigation order: file, title (app.py's navigation and the page's heading), icon.
PAGES = {"pages/architectures.py": ("Architectures", ":material/schema:"),
         "pages/train.py": ("Train & compare", ":material/monitoring:"),
         "pages/sweep.py": ("Sweep", ":material/grid_on:"),
         "pages/predict.py": ("Predict", ":material/image_search:"),
         "pages/runs.py": ("Runs", ":material/history:"),
         "pages/docs.py": ("Docs", ":material/article:")}


def page_setup(page: str) -> None:
    """Every page's first call, before its imports of torch and the library (about 2 s on a cold server).

    Until app.py's st.navigation has run once in this server process, Streamlit runs a deep link's `pages/` file
    on its own (its legacy pages/ folder mode; .streamlit/config.toml hides that mode's navigation): hand the link
    to app.py at once, which sets up the navigation and comes back here.
    Then the page's title, drawn before those imports so that a cold page shows at once what it is."""
    if not NAVIGATION["ready"]:
        st.session_state["goto"] = page
        st.switch_page("app.py")
    st.title(PAGES[page][0])


def plain(text: str) -> str:
    """User-given text (file names, paths, messages) for a Markdown element: every punctuation mark escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


@st.cache_resource
def service() -> Service:
    """One per server process, so runs keep going when a tab closes and show again when it reopens. Every page
    that runs torch calls it first. It also gives the process one intra-op torch thread: the server only runs
    batch-1 predictions and profiles, which one thread runs as fast for nets this small, and it never spins on
    cores a training worker or the browser needs."""
    import torch

    from mscompare.service import Service

    torch.set_num_threads(1)
    return Service()


def yield_to_training() -> None:
    """While runs train on this machine (the app's, a sweep's, or a CLI run's: each training process announces
    itself, threads.announce_training), this page's work (predictions, charts, tables) runs at a lower priority
    so that the runs keep their cores beside a busy browser (docs/bench-shared-machine.txt). Only this script thread
    is lowered; Streamlit starts a new one for every rerun, and runs are never started from a page that calls
    this (workers and their slot threads come from the Service, created before the first call)."""
    from mscompare.threads import PAGE_NICE, lower_thread_priority, training_processes

    from mscompare.settings import page_nice

    nice = page_nice(PAGE_NICE)
    svc = service()  # first, also on a page that lowers nothing: the process's torch threads
    if nice > 0 and (svc.training() or training_processes()):
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
def compare_table(dataset: str, units: int | None, width: int, expand: int = 1) -> pd.DataFrame:
    from mscompare.profile import compare

    return compare(dataset, units, width, expand)


@st.cache_data(show_spinner=False, max_entries=256)
def layer_profile(cfg_dict: dict):
    from mscompare.models import ModelConfig
    from mscompare.profile import cached_profile

    p = cached_profile(ModelConfig.from_dict(cfg_dict))
    return p.layers, p.unit_params


@st.cache_data(show_spinner="Paired tests on the test images...", max_entries=64)
def reference_deltas(run_groups: tuple[tuple[str, ...], ...], reference: str) -> pd.DataFrame:
    """Each configuration against the reference (cached per set of finished runs: the bootstrap takes a while)."""
    return service().against(service().groups(ids=[r for g in run_groups for r in g]), reference)


# The grouped table's columns: human names, units, thousands separators.
GROUPED_COLUMNS = {
    "configuration": st.column_config.TextColumn("configuration", width="medium"),
    "n": st.column_config.NumberColumn("seeds", format="%d", width="small"),
    "accuracy": st.column_config.TextColumn("accuracy % (mean ± std)"),
    "Δ vs reference": st.column_config.TextColumn("Δ vs reference (points, 95% CI)"),
    "verdict": st.column_config.TextColumn("verdict", width="small"),
    "range": st.column_config.TextColumn("min–max %"),
    "params": st.column_config.NumberColumn("params", format="localized", width="small"),
    "macs": st.column_config.NumberColumn("MACs", format="localized", width="small"),
    "img/s": st.column_config.NumberColumn("img/s", format="localized", width="small"),
}


def grouped_table(grouped: pd.DataFrame, deltas: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration for display: mean ± std and range in %, costs, and the Δ against the reference."""
    d = deltas.set_index("label") if not deltas.empty else pd.DataFrame(columns=["delta", "ci_low", "ci_high", "verdict"])
    rows = []
    for g in grouped.itertuples():
        std = f" ± {100 * g.std:.2f}" if g.n > 1 else " (1 seed)"
        r = {"configuration": g.label, "n": g.n, "accuracy": f"{100 * g.mean:.2f}{std}",
             "range": f"{100 * g.min:.2f}–{100 * g.max:.2f}", "params": g.params, "macs": g.macs,
             "img/s": round(g.images_per_s) if g.images_per_s == g.images_per_s else None,
             "Δ vs reference": "reference", "verdict": ""}
        if g.label in d.index and d.loc[g.label, "delta"] is not None and d.loc[g.label, "delta"] == d.loc[g.label, "delta"]:
            x = d.loc[g.label]
            r["Δ vs reference"] = f"{x['delta']:+.2f} [{x['ci_low']:+.2f}, {x['ci_high']:+.2f}]"
            r["verdict"] = {"a better": "better", "b better": "worse"}.get(x["verdict"], x["verdict"])
        elif g.label in d.index:
            r["Δ vs reference"], r["verdict"] = "n/a", "n/a"
        rows.append(r)
    return pd.DataFrame(rows)[list(GROUPED_COLUMNS)]


def per_class_bars(ev: dict, title: str):
    d = pd.DataFrame({"class": ev["classes"], "accuracy": ev["per_class"]})
    fig = px.bar(d, x="class", y="accuracy", title=title)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig.update_layout(height=360)


def onnx_download(key: str, what: str, file_name: str, make) -> None:
    """An export button for `what`: on click `make()` (mscompare.export.export_bytes) writes the ONNX file and checks
    it against PyTorch; the checked file is then offered for download with its parity line. A failed export or
    parity check is one error line, and no file is offered."""
    if st.button(f"Export {what} to ONNX", key=f"onnx-{key}",
                 help="Dynamic batch axis; class names, mean and std in its metadata. Checked with ONNX Runtime "
                      "against PyTorch on test images of its dataset (every logit within 1e-3) before it is offered."):
        st.session_state.pop("onnx_export", None)
        try:
            with st.spinner(f"Exporting {what} and checking it against PyTorch on test images..."):
                st.session_state["onnx_export"] = (key, *make())
        except Exception as e:  # noqa: BLE001 - an ExportError, or the run store failing: one line either way
            st.error(f"Can't export {plain(what)}: {plain(e)}")
    done = st.session_state.get("onnx_export")
    if done and done[0] == key:
        st.download_button(f"Download {file_name}", done[1], file_name, "application/octet-stream",
                           key=f"onnx-dl-{key}")
        st.caption(plain(done[2].line()))
