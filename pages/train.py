"""Train & compare page: choose models and protocol, start background runs, watch live curves, cancel, export."""
import streamlit as st

from mscompare import DATASETS, MODELS
from mscompare.service import default_data_root
from mscompare.train import PRESETS
from ui import accuracy_chart, page_setup, service

page_setup("pages/train.py")

svc = service()
st.title("Train & compare")
with st.form("start"):
    models = st.multiselect("Models", list(MODELS), default=list(MODELS))
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Dataset", list(DATASETS))
    preset_name = c2.selectbox("Preset", PRESETS, index=PRESETS.index("quick"),
                               help="paper: batch 128, 5,000 iterations (MNIST/CIFAR-10), test every 100")
    iters = c3.number_input("Iterations (0 = preset's)", 0, 100000, 0, step=100)
    device = c4.selectbox("Device", ["auto", "cpu", "cuda"])
    c5, c6, c7 = st.columns([2, 1, 1])
    data_root = c5.text_input("Data root", default_data_root())
    units = c6.slider("Units (0 = paper's)", 0, 4, 0)
    width = c7.slider("Width", 8, 128, 32, step=8)
    if st.form_submit_button("Start training", type="primary"):
        try:
            ids = svc.start(models, dataset, preset_name, data_root, device, iters or None, units or None, width)
            st.session_state["batch"] = ids
            st.success(f"Queued {len(ids)} runs; they train in the background, one at a time.")
        except Exception as e:  # noqa: BLE001 - bad settings are shown, not raised
            st.error(f"Could not start: {e}")

@st.fragment(run_every=2)
def live():
    recent = svc.runs(tag="app")
    ids = st.session_state.get("batch") or recent["id"].head(5).tolist()  # a reopened tab shows the latest
    runs = recent[recent["id"].isin(ids)]
    if runs.empty:
        st.info("No runs yet. Choose models and press Start training.")
        return
    active = runs[runs["status"].isin(["queued", "running"])]
    st.markdown(f"**{len(active)} of {len(runs)} runs active**: "
                + ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items()))
    for r in runs.itertuples():
        eta = f", ETA {r.eta_s} s" if r.eta_s == r.eta_s and r.eta_s is not None else ""
        note = f": {r.message}" if r.status in ("failed", "interrupted") and r.message else ""
        c1, c2 = st.columns([5, 1])
        c1.progress(min(r.iter / r.iters, 1.0), text=f"{r.model}: {r.status}, {r.iter}/{r.iters}{eta}{note}")
        if r.status in ("queued", "running") and c2.button("Cancel", key=f"cancel-{r.id}"):
            svc.cancel(r.id)
    st.plotly_chart(accuracy_chart(svc.curves(ids), "Test accuracy vs iteration"), key="live_chart")
    table = svc.results(runs)  # the rows already fetched for this refresh
    st.subheader("Results (like the paper's Tables 3-6)")
    st.dataframe(table, hide_index=True)
    st.download_button("Download results CSV", table.to_csv(index=False), "results.csv", "text/csv")

live()
