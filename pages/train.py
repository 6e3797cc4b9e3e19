"""Train & compare page: choose models and protocol, start a batch of background runs, watch it live, cancel, export."""
from ui import page_setup

page_setup("pages/train.py")  # first: the title, before the slow imports below

import streamlit as st

from mscompare.config import PRESETS, paper_units
from mscompare.datasets import DATASETS
from mscompare.estimate import for_batch
from mscompare.models import list_units
from mscompare.service import DEFAULT_SEEDS, MAX_SEEDS, data_roots, find_datasets, no_data_help
from mscompare.train import available_devices
from ui import (MISSING, GROUPED_COLUMNS, band_chart, grouped_table, plain, reference_deltas, service,
                yield_to_training)

yield_to_training()

svc = service()
found = find_datasets()
if not found:
    st.info(no_data_help())
st.sidebar.number_input("Runs side by side", 1, 8, svc.concurrency, key="concurrency",
                        on_change=lambda: svc.manager.set_concurrency(st.session_state["concurrency"]),
                        help="Queued runs train this many at a time, each with its share of the CPU cores.")
# Plain widgets, not a form: the unit counts and the run count below follow every change before Start.
models = st.multiselect("Models", list_units(), default=list_units())
c1, c2, c3, c4 = st.columns(4)
dataset = c1.selectbox("Dataset", list(found), help="Datasets found under " +
                       ", ".join(str(r) for r in data_roots()) + ". To add one, put a folder there with "
                       "train.npz + test.npz, or train/<class>/ and test/<class>/ images, and reload.")
preset_name = c2.selectbox("Preset", list(PRESETS), index=list(PRESETS).index("quick"),
                           help="paper: batch 128, 5,000 iterations (MNIST/CIFAR-10), test every 100; "
                                "quick: 300 iterations; modern: the paper's budget with SGD one-cycle")
iters = c3.number_input("Iterations (0 = preset's)", 0, 100000, 0, step=100)
device = c4.selectbox("Device", available_devices())
c6, c7, c8, c9 = st.columns([2, 2, 1, 1])
units = c6.slider("Units (0 = paper's)", 0, 4, 0, key="train_units",
                  help="0 uses the paper's count for the dataset:\n\n" +
                       "\n\n".join(DATASETS[d].summary() for d in DATASETS))
width = c7.slider("Width", 8, 128, 32, step=8)
precision = c8.selectbox("Precision", ["fp32", "bf16", "auto"],
                         help="bf16 autocast trains faster on CPUs with native bf16 (AVX512-BF16, AMX) and "
                              "on GPUs; auto times a few steps of each model both ways and takes bf16 only "
                              "where it is 20% faster. docs/RESULTS.md has the accuracy check.")
seeds = c9.number_input("Seeds", 1, MAX_SEEDS, DEFAULT_SEEDS,
                        help="Seeds 0, 1, ... of every model. With one seed the seed-to-seed spread is unknown "
                             "and no difference between models can be called real; 3 is the fewest that gives "
                             "a spread (README).")
fuse = st.sidebar.selectbox("Fuse seeds", ["auto", "on", "off"],
                            help="Seeds of one model train as one fused computation: auto where a few timed steps "
                                 "say it is faster on this machine, on, or off (for A/B).")
if dataset:
    st.caption("Units per model: " + ", ".join(f"{m} {units or paper_units(m, dataset)}" for m in models))
    if models:
        st.caption(for_batch(svc.store.list(status="done"), models, dataset, preset_name, iters, units, width,
                             precision, device, seeds).line())
n_runs = len(models) * seeds
label = f"Start {n_runs} run{'s' if n_runs != 1 else ''} ({len(models)} model{'s' if len(models) != 1 else ''} × {seeds} seed{'s' if seeds != 1 else ''})"
if st.button(label, type="primary", disabled=not found or not models):
    try:
        batch, ids = svc.start(models, dataset, preset_name, found[dataset], device, iters or None,
                               units or None, width, precision=precision, seeds=seeds, fuse=fuse)
        st.session_state["batch"] = batch
        st.query_params["batch"] = batch
        st.success(f"Queued {len(ids)} run{'s' if len(ids) != 1 else ''} as batch {batch}; "
                   + ("they train" if len(ids) != 1 else "it trains")
                   + f" in the background, {svc.concurrency} at a time.")
    except Exception as e:  # noqa: BLE001 - bad settings are shown, not raised
        st.error(f"Could not start: {plain(e)}")

batches = svc.batches()
if not batches:
    st.info("No runs yet. Choose models and press Start training.")
    st.stop()
ids = [b["batch"] for b in batches]
current = st.session_state.get("batch") or st.query_params.get("batch")
current = current if current in ids else ids[0]
picked = st.selectbox("Batch", ids, index=ids.index(current),
                      format_func=lambda b: next(f"{b} — {x['runs']} run{'s' if x['runs'] != 1 else ''} on "
                                                 f"{x['dataset']} ({x['preset']}, {x['precision']}): {x['models']}"
                                                 for x in batches if x["batch"] == b))
if picked != current:
    st.session_state["batch"] = picked
    st.query_params["batch"] = picked


def status(batch: str, polling: bool):
    """Every run's progress, loss, images/s and ETA, and its Cancel button: refreshed every 2 s while it trains."""
    runs = svc.runs(batch=batch)
    active = runs[runs["status"].isin(["queued", "running"])]
    if polling and active.empty:
        st.rerun()  # the batch just finished: redraw once without the timers, so an idle tab costs nothing
    st.text(f"{len(active)} of {len(runs)} run{'' if len(runs) == 1 else 's'} active: "
            + ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items()))
    for r in runs.itertuples():
        done_iters = int(r.iter) if r.iter == r.iter and r.iter is not None else 0
        bits = [f"{r.model}: {r.status}, {done_iters}/{r.iters}"]
        if r.status == "running":
            if r.live_loss == r.live_loss and r.live_loss is not None:
                bits.append(f"loss {r.live_loss:.3f}")
            if r.live_images_per_s == r.live_images_per_s and r.live_images_per_s is not None:
                bits.append(f"{r.live_images_per_s:,.0f} img/s")
            if r.eta_s is not None and r.eta_s == r.eta_s:
                bits.append(f"ETA {int(r.eta_s)} s")
        if r.status in ("failed", "interrupted", "cancelled") and isinstance(r.message, str) and r.message:
            bits.append(str(r.message))
        c1, c2 = st.columns([5, 1])
        c1.progress(min(done_iters / r.iters, 1.0) if r.iters else 0.0)
        c1.text(", ".join(bits))
        if r.status in ("queued", "running") and c2.button("Cancel", key=f"cancel-{r.id}"):
            svc.cancel(r.id)


# The results table's headers and pixel widths, so its 14 columns fit the wide layout without cutting a digit
# (the run id begins with the creation time; `created` is in the CSV).
COLUMNS = {"run_id": ("run", 158), "model": ("model", 80), "dataset": ("data", 58), "preset": ("preset", 58),
           "iters": ("iters", 50), "seed": ("seed", 42), "units": ("units", 46), "width": ("width", 50),
           "status": ("status", 76), "params": ("params", 64), "macs": ("MACs", 74), "test_acc_%": ("acc %", 56),
           "seconds": ("s", 52), "images_per_s": ("img/s", 58)}


def results(batch: str):
    """Curves and results by configuration, with the paired test against a reference: refreshed every 10 s while
    the batch trains (a chart redraw costs the browser far more than a progress bar), once more when it ends."""
    runs = svc.runs(batch=batch)
    grouped = svc.groups(batch=batch)
    live = svc.groups(batch=batch, finished=False)  # running runs draw their curves too
    if not live.empty:
        full = st.toggle("Accuracy axis 0-100%", key="full_scale", help="Off: the axis zooms to the data.")
        st.plotly_chart(band_chart(svc.band_curves(live), f"Batch {batch}", full), key="live_chart")
    st.subheader("Results by configuration (seeds are repeats)")
    if grouped.empty:
        st.info("No run of this batch has finished yet.")
    else:
        labels = grouped["label"].tolist()
        default = next((i for i, m in enumerate(grouped["model"]) if m == "mobilenet"), 0)
        # keyed by the configurations present, so the default (mobilenet) returns when one more finishes
        reference = st.selectbox("Reference", labels, index=default, key=f"reference-{batch}-{len(labels)}",
                                 help="Every other configuration is compared with it on the same test images.")
        deltas = reference_deltas(tuple(tuple(r) for r in grouped["runs"]), reference)
        table = grouped_table(grouped, deltas)
        st.dataframe(table, hide_index=True, column_config=GROUPED_COLUMNS, placeholder=MISSING)
        for sentence in deltas["sentence"]:
            st.markdown("- " + plain(sentence))
        c1, c2 = st.columns(2)
        c1.download_button("Download grouped CSV", table.to_csv(index=False), f"results-{batch}-grouped.csv",
                           "text/csv")
        c2.download_button("Download report (HTML)", lambda: svc.report(runs["id"].tolist(), reference),
                           f"report-{batch}.html", "text/html")
    with st.expander(f"Single runs ({len(runs)})"):
        table = svc.results(runs)
        st.dataframe(table, hide_index=True, column_order=list(COLUMNS), placeholder=MISSING,
                     column_config={c: st.column_config.Column(lbl, width=px) for c, (lbl, px) in COLUMNS.items()})
        st.download_button("Download results CSV", table.to_csv(index=False), f"results-{batch}.csv", "text/csv")


polling = bool(svc.runs(batch=picked)["status"].isin(["queued", "running"]).any())
st.fragment(run_every=2 if polling else None)(status)(picked, polling)
st.fragment(run_every=10 if polling else None)(results)(picked)
