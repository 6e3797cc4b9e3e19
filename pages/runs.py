"""Runs page: the whole history from the run store, filtered; compare curves; export CSV."""
import streamlit as st

from mscompare.reproduce import cost_chart
from ui import accuracy_chart, page_setup, service

page_setup("pages/runs.py")

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
st.dataframe(df, hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="%d") for c in ("params", "macs", "iters", "iter", "seed", "units", "width")})
st.download_button("Export these runs as CSV", df.to_csv(index=False), "runs.csv", "text/csv")
done = df[df["status"] == "done"]
if not done.empty:
    st.plotly_chart(cost_chart(done, "Test accuracy vs parameters and vs MACs (finished runs)"))
pick = st.multiselect("Compare curves of", df["id"].tolist(), default=df["id"].head(5).tolist())
if pick:
    st.plotly_chart(accuracy_chart(svc.curves(pick), "Test accuracy vs iteration"))
