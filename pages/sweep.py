"""Sweep page: build a grid, run it on this machine or a Ray cluster, watch it, cancel it; the accuracy frontier."""
from ui import page_setup

page_setup("pages/sweep.py")  # first: the title, before the slow imports below

import streamlit as st

from mscompare.config import PRESETS
from mscompare.datasets import DATASETS
from mscompare.estimate import for_sweep
from mscompare.frontier import frontier_chart, protocol_label, protocols
from mscompare.models import list_units
from mscompare.service import find_datasets, no_data_help
from mscompare.sweeps import describe
from ui import MISSING, latencies, plain, service

svc = service()
found = {d: r for d, r in find_datasets().items() if d in DATASETS}
if not found:
    st.info(no_data_help())
# Plain widgets, not a form: the trial count below follows every change before Start.
models = st.multiselect("Models", list_units(), default=list_units())
c1, c2, c3 = st.columns([2, 2, 1])  # the chips of datasets and widths need the room; narrow windows too
datasets = c1.multiselect("Datasets", list(found), default=list(found)[:1], key="sweep_datasets")
widths = c2.multiselect("Widths", [8, 16, 24, 32, 48, 64, 96, 128], default=[16, 32, 64])
seeds = c3.number_input("Seeds", 1, 10, 3, help="Seeds per configuration: 3 gives a seed spread for the "
                        "frontier's error bars and its 'within spread' marks (README).")
c4, c5, c6, c7 = st.columns(4)
units = c4.multiselect("Units (none = paper's)", [1, 2, 3, 4])
preset_name = c5.selectbox("Preset", list(PRESETS), index=list(PRESETS).index("paper"))
iters = c6.number_input("Iterations (0 = preset's)", 0, 100000, 0, step=100)
executor = c7.radio("Executor", ["local", "ray"], horizontal=True,
                    help="local: worker processes here. ray: a Ray task per trial, on the cluster at "
                         "$MSCOMPARE_RAY_ADDRESS (default: start or join a local Ray).")
n = len(models) * len(datasets) * len(widths) * max(1, len(units)) * seeds
st.caption(f"{n} trials. " + (for_sweep(svc.store, models, datasets, widths, units, seeds, preset_name, iters).line()
                              if n else ""))
if st.button(f"Start sweep ({n} trials)", type="primary", disabled=not found or not n):
    try:
        roots = {found[d] for d in datasets}
        if len(roots) > 1:
            raise ValueError("the chosen datasets live under different data roots; sweep them one at a time")
        sid = svc.start_sweep(models, datasets, widths, units, seeds, preset_name, iters or None, roots.pop(),
                              executor)
        st.query_params["sweep"] = sid
    except Exception as e:  # noqa: BLE001 - bad settings are shown, not raised
        st.error(f"Could not start: {plain(e)}")


def sweeps():
    """Every sweep of the run store with its progress and Cancel; the one in the URL (?sweep=) with its trials.
    Refreshed every 2 s while one runs, in this process or another."""
    listed = svc.sweep_list()
    shown = st.query_params.get("sweep")
    if shown and shown not in {s["id"] for s in listed}:
        st.warning(f"No sweep {plain(shown)} in this run store.")
    for s in listed[:10]:
        c1, c2 = st.columns([5, 1])
        c1.progress(s["finished"] / max(s["total"], 1))
        c1.text(describe(s))
        if s["running"] and not s["cancelling"] and c2.button("Cancel sweep", key=f"cancel-{s['id']}"):
            svc.cancel_sweep(s["id"])
        if s["id"] != shown and c2.button("Show trials", key=f"show-{s['id']}"):
            st.query_params["sweep"] = shown = s["id"]
        if s["id"] == shown:
            results = svc.sweep_status(shown)["results"]
            if results:
                num = st.column_config.NumberColumn
                results = [{**r, "test_acc": None if r["test_acc"] is None else 100 * r["test_acc"]} for r in results]
                c1.dataframe(results, hide_index=True, placeholder=MISSING, column_config={
                    "run_id": "run", "test_acc": num("accuracy %", format="%.2f"), "seed": num("seed", format="%d"),
                    "params": num("parameters", format="localized"), "macs": num("MACs / image", format="localized"),
                    "seconds": num("seconds", format="%.1f"), "width": num("width", format="%d"),
                    "units": num("units", format="%d")})
    if polling and not any(s["running"] for s in listed):
        st.rerun()  # the last sweep ended: redraw once without the timer, so an idle tab costs nothing


listed_now = svc.sweep_list()
if listed_now:
    st.subheader("Sweeps")
    polling = any(s["running"] for s in listed_now)
    st.fragment(run_every=2 if polling else None)(sweeps)()

st.subheader("Accuracy per cost: every finished run")
pts = svc.frontier_points()
if pts.empty:
    st.info("No finished runs yet.")
    st.stop()
c1, c2 = st.columns(2)
cost = c1.radio("Cost", ["params", "macs", "latency_ms"], horizontal=True,
                format_func={"params": "parameters", "macs": "MACs per image", "latency_ms": "latency"}.get,
                help="Latency: batch-1 inference, one thread, measured on this machine when first shown.")
ds = c2.multiselect("Datasets", sorted(pts["dataset"].unique()), default=sorted(pts["dataset"].unique())[:1],
                    key="frontier_datasets")
shown = pts[pts["dataset"].isin(ds)] if ds else pts
choices = protocols(shown)
proto = st.selectbox("Protocol", choices, help="Points average the seeds of one configuration and one protocol "
                     "only; runs of other presets, iteration counts, precisions or devices are never averaged in.")
shown = shown[shown.apply(protocol_label, axis=1) == proto]
if cost == "latency_ms":
    shown = latencies(shown)
fig = frontier_chart(shown, cost, f"Test accuracy vs {cost} ({proto}; mean ± std over seeds; dotted: Pareto "
                                  "frontier; open diamonds: within the seed spread of it)")
st.plotly_chart(fig)
c1, c2, c3 = st.columns(3)
c1.download_button("Export the chart (HTML)", fig.to_html(include_plotlyjs=True), f"frontier-{cost}.html",
                   "text/html")
c2.download_button("Export the points (CSV)", shown.drop(columns=["model_config"]).to_csv(index=False),
                   "frontier.csv", "text/csv")
c3.download_button("Download report (HTML)", lambda: svc.report([r for g in shown["runs"] for r in g]),
                   "sweep-report.html", "text/html")
