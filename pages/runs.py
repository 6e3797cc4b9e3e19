"""Runs page: the whole history from the run store, filtered; compare curves; why a run is right or wrong; export."""
from ui import page_setup

page_setup("pages/runs.py")  # first: the title, before the slow imports below

import pandas as pd
import streamlit as st

from mscompare import robustness
from mscompare.reproduce import cost_chart
from mscompare.export import export_bytes, from_run
from mscompare.charts import curves_chart
from ui import (MISSING, confusion_heatmap, onnx_download, per_class_bars, plain, reliability_chart,
                service, yield_to_training)

yield_to_training()

svc = service()
df = svc.runs()
if df.empty:
    st.info("No runs stored yet. Train on the Train & compare page or with python -m mscompare train.")
    st.stop()
names = svc.run_labels(df["id"].tolist())  # groups.run_label: the one way a run is named


def active_runs(polling: bool):
    """Every queued or running run of the store (a batch's, a sweep's, the CLI's) with a Cancel button each;
    refreshed every 2 s while there are any."""
    active = svc.runs()
    active = active[active["status"].isin(["queued", "running"])]
    if polling and active.empty:
        st.rerun()  # the last one ended: redraw the page once, without the timer
    for r in active.itertuples():
        c1, c2 = st.columns([5, 1])
        done_iters = int(r.iter) if r.iter == r.iter and r.iter is not None else 0
        c1.text(f"{names.get(r.id, r.id)}: {r.status}, {done_iters:,}/{int(r.iters):,} iterations")
        if c2.button("Cancel", key=f"cancel-{r.id}"):
            svc.cancel(r.id)


if df["status"].isin(["queued", "running"]).any():
    st.subheader("Active runs")
    st.fragment(run_every=2)(active_runs)(True)
c1, c2, c3, c4 = st.columns(4)
ds = c1.multiselect("Dataset", sorted(df["dataset"].unique()))
ms = c2.multiselect("Model", sorted(df["model"].unique()))
status = c3.multiselect("Status", sorted(df["status"].unique()))
presets = c4.multiselect("Preset", sorted(df["preset"].dropna().unique()))
for col, chosen in (("dataset", ds), ("model", ms), ("status", status), ("preset", presets)):
    if chosen:
        df = df[df[col].isin(chosen)]
shown = df.drop(columns=["test_acc", "live_loss", "live_images_per_s", "eta_s"])
shown.insert(shown.columns.get_loc("iters") + 1, "test_acc_%", (df["test_acc"].astype(float) * 100).round(2))
table = shown.assign(created=pd.to_datetime(shown["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M"),
                     message=shown["message"].fillna(""), batch=shown["batch"].fillna(""))
number = lambda name, fmt="localized": st.column_config.NumberColumn(name, format=fmt)  # noqa: E731
st.dataframe(table, hide_index=True, placeholder=MISSING, column_config={  # accuracy in % as on every page
    "id": "run", "iter": number("at iteration"), "iters": number("iterations"), "seed": number("seed", "%d"),
    "units": number("units", "%d"), "width": number("width", "%d"), "test_acc_%": number("accuracy %", "%.2f"),
    "params": number("parameters"), "macs": number("MACs / image"), "seconds": number("seconds", "%.1f"),
    "images_per_s": number("img/s"), "message": "message", "created": "started at"})
st.download_button("Export these runs as CSV", shown.to_csv(index=False), "runs.csv", "text/csv")
done = df[df["status"] == "done"]
if not done.empty:
    st.plotly_chart(cost_chart(done, "Test accuracy vs parameters and vs MACs (finished runs)"))
pick = st.multiselect("Compare curves of", df["id"].tolist(), default=df["id"].head(5).tolist(),
                      format_func=lambda i: names.get(i, i))
if pick:
    full = st.toggle("Accuracy axis 0-100%", key="runs_full_scale", help="Off: the axis zooms to the data.")
    st.plotly_chart(curves_chart(svc.curves(pick), "Test accuracy vs iteration", full))

st.subheader("Is A better than B? (paired, on the same test images)")
grouped = svc.groups(ids=done["id"].tolist()) if not done.empty else None
if grouped is not None and len(done) >= 2:
    by = st.radio("Compare", ["configurations (all their seeds)", "two runs"], horizontal=True)
    if by.startswith("config") and len(grouped) >= 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("A", grouped["label"], index=0)
        b = c2.selectbox("B", grouped["label"], index=1)
        ids_a, ids_b = (list(grouped.set_index("label").loc[x, "runs"]) for x in (a, b))
    else:
        c1, c2 = st.columns(2)
        label_of = {r: names[r] for r in done["id"]}
        ids_a = [c1.selectbox("Run A", list(label_of), format_func=label_of.get, index=0)]
        ids_b = [c2.selectbox("Run B", list(label_of), format_func=label_of.get, index=1)]
    if ids_a != ids_b:
        try:
            res = svc.compare(ids_a, ids_b)
            st.markdown(f"**{plain(res['sentence'])}**")
            st.caption(f"A − B = {res['diff']:+.2f} points, 95% CI [{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}] "
                       f"({res['method']}); exact McNemar p per seed pair: "
                       + ", ".join(f"{p:.3g}" for p in res["p_mcnemar"]))
        except Exception as e:  # noqa: BLE001 - e.g. different test sets: one clear line
            st.warning(f"Can't compare these: {plain(e)}")
    else:
        st.info("Choose two different runs or configurations.")
    st.download_button("Download report of the filtered runs (HTML)", lambda: svc.report(done["id"].tolist()),
                       "mscompare-report.html", "text/html")
else:
    st.info("Two finished runs are needed for a comparison.")

st.subheader("Robustness to corruptions")
st.caption("Accuracy on each run's own test set under noise, blur, contrast, brightness, JPEG and pixelation "
           "(plus rotation and shifts for 1-channel digits) at severities 1-5 (0: clean), the CIFAR-10-C and MNIST-C "
           "recipes; computed once per run and stored with it.")
if grouped is not None and not grouped.empty:
    chosen_cfg = st.multiselect("Configurations (mean ± std over their seeds)", grouped["label"].tolist(),
                                default=grouped["label"].tolist()[:3], key="robust_configs")
    run_label = {rid: g.label for g in grouped.itertuples() if g.label in chosen_cfg for rid in g.runs}
    compute = st.button("Evaluate the runs without results (a few minutes per run on a CPU)", key="robust_go")
    try:
        with st.spinner(f"Evaluating {len(run_label)} run(s) under every corruption..." if compute else "Reading..."):
            curves, rtable, missing = robustness.panel(svc.store, run_label, compute=compute)
        if missing:
            st.info(f"{len(missing)} of the {len(run_label)} runs have no robustness results yet: press Evaluate.")
        if not rtable.empty:
            st.plotly_chart(robustness.chart(curves))
            st.dataframe(robustness.format_table(rtable), hide_index=True, placeholder=MISSING)
    except Exception as e:  # noqa: BLE001 - a missing checkpoint or dataset: one clear line
        st.warning(f"Can't evaluate these runs: {plain(e)}")
else:
    st.info("No finished runs yet.")

st.subheader("Where a run is right or wrong")
label = {r: names[r] for r in done["id"]}
chosen = st.multiselect("Runs to inspect (two side by side)", list(label), default=list(label)[:1],
                        max_selections=2, format_func=label.get)
for col, rid in zip(st.columns(max(len(chosen), 1)), chosen):
    ev = svc.evaluation(rid)
    if ev is None:
        col.info("This run has no per-class evaluation (it finished before evaluations were stored).")
        continue
    col.plotly_chart(confusion_heatmap(ev, f"{label[rid]}: confusion"), key=f"cm-{rid}")
    col.plotly_chart(per_class_bars(ev, "Accuracy per class"), key=f"pc-{rid}")
    if ev.get("reliability"):
        col.plotly_chart(reliability_chart(ev["reliability"], "Reliability (15 confidence bins)"), key=f"rel-{rid}")
    else:
        col.caption("No reliability diagram: this run finished before calibration was stored.")
    if ev["confused_pairs"]:
        col.text("Most confused: " + ", ".join(f"{ev['classes'][p['true']]} -> {ev['classes'][p['pred']]} "
                                               f"({p['count']})" for p in ev["confused_pairs"]))
    if ev["images"]:
        col.text("Most confidently misclassified test images (true -> predicted, confidence):")
        imgs = ev["images"][:16]
        col.image([a for a, _ in imgs], width=64, clamp=True,
                  caption=[f"{ev['classes'][m['true']]} -> {ev['classes'][m['pred']]} {m['confidence']:.0%}"
                           for _, m in imgs])
    elif ev.get("images_error"):
        col.caption(f"No gallery: the test images can't be loaded ({plain(ev['images_error'])[:200]}).")

st.subheader("Export a finished run to ONNX")
if done.empty:
    st.info("No finished run to export yet.")
else:
    rid = st.selectbox("Run to export", list(label), format_func=label.get, key="onnx_run")
    onnx_download(rid, f"run {rid}", f"{rid}.onnx", lambda: export_bytes(from_run(svc.store, rid)))
