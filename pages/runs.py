"""Runs page: the whole history from the run store, filtered; compare curves; why a run is right or wrong; export."""
import streamlit as st

from mscompare.reproduce import cost_chart
from ui import (accuracy_chart, confusion_heatmap, page_setup, per_class_bars, plain, reliability_chart, service,
                yield_to_training)

page_setup("pages/runs.py")
yield_to_training()

svc = service()
st.title("Runs")
df = svc.runs()
if df.empty:
    st.info("No runs stored yet. Train on the Train & compare page or with python -m mscompare train.")
    st.stop()
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
st.dataframe(shown, hide_index=True, column_config={  # accuracy in % as on every other page
    c: st.column_config.NumberColumn(format="%d") for c in ("params", "macs", "iters", "iter", "seed", "units", "width")})
st.download_button("Export these runs as CSV", shown.to_csv(index=False), "runs.csv", "text/csv")
done = df[df["status"] == "done"]
if not done.empty:
    st.plotly_chart(cost_chart(done, "Test accuracy vs parameters and vs MACs (finished runs)"))
pick = st.multiselect("Compare curves of", df["id"].tolist(), default=df["id"].head(5).tolist())
if pick:
    st.plotly_chart(accuracy_chart(svc.curves(pick), "Test accuracy vs iteration"))

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
        label_of = {r.id: f"{r.model} · {r.dataset} · {r.preset} {int(r.iters):,} it · seed {r.seed} · "
                          f"{100 * r.test_acc:.2f}% · {r.id[-6:]}" for r in done.itertuples()}
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

st.subheader("Where a run is right or wrong")
label = {r.id: f"{r.model} on {r.dataset} ({r.preset}, seed {r.seed}, {r.id})" for r in done.itertuples()}
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
