"""Architectures page: sliders for units and width; params/MACs/speed/accuracy table, charts, unit diagrams."""
from ui import page_setup

page_setup("pages/architectures.py")  # first: the title, before the slow imports below

import time

import pandas as pd
import plotly.express as px
import streamlit as st

from mscompare.charts import layer_time_chart, model_colours
from mscompare.config import config_for
from mscompare.datasets import DATASETS
from mscompare.diagram import unit_dot
from mscompare.export import speed_all, wide
from mscompare.layertime import BATCHES, breakdown, estimate_s
from mscompare.models import MAX_EXPAND, ModelConfig, get_unit, list_units, uses_expand
from mscompare.profile import prefetch
from mscompare.speed import measure_all, torch_threads
from ui import MISSING, compare_table, layer_profile, service, yield_to_training

yield_to_training()


@st.cache_data(show_spinner="Measuring latency and training speed of every model on this machine...",
               max_entries=64)
def speed_table(dataset: str, units: int | None, width: int) -> tuple[pd.DataFrame, str]:
    df = measure_all(dataset, units, width)
    return df, time.strftime("%H:%M:%S")


@st.cache_data(show_spinner="Exporting every model to ONNX and timing it beside PyTorch eager on this machine...",
               max_entries=32)
def onnx_speed(dataset: str, units: int | None, width: int, expand: int) -> pd.DataFrame:
    return wide(speed_all(dataset, units, width, expand))


ONNX_COLUMNS = {f"{rt}_b{b}_{t}_ms": st.column_config.NumberColumn(
    f"{name} batch {b}, {'1 thread' if t == '1t' else 'all cores'}, ms", format="%.3f")
    for b in (1, 64) for t in ("1t", "all") for rt, name in (("pytorch", "PyTorch"), ("onnx", "ONNX Runtime"))}


@st.cache_data(show_spinner=False, max_entries=256)
def diagram(cfg_dict: dict) -> str:
    return unit_dot(ModelConfig.from_dict(cfg_dict))


@st.cache_data(show_spinner="Timing every layer at batch 1 and 128 on this machine...", max_entries=64)
def layer_times(cfg_dict: dict, _fresh: bool = False) -> pd.DataFrame:
    return breakdown(ModelConfig.from_dict(cfg_dict), fresh=_fresh)


LAYER_TIME_COLUMNS = {"macs": st.column_config.NumberColumn("MACs / image", format="localized"),
                      "mac_share": st.column_config.NumberColumn("share of MACs", format="percent"),
                      **{k: v for b in BATCHES for k, v in (
                          (f"ms_b{b}", st.column_config.NumberColumn(f"ms, batch {b}", format="%.3f")),
                          (f"time_share_b{b}", st.column_config.NumberColumn(f"share of time, batch {b}",
                                                                              format="percent")),
                          (f"gflop_s_b{b}", st.column_config.NumberColumn(f"GFLOP/s, batch {b}", format="%.2f")))}}


def best_accuracy(dataset: str, width: int) -> pd.DataFrame:
    """Finished runs at this dataset and width: best test accuracy (%) and run count per model and units."""
    runs = service().runs(status="done")
    runs = runs[(runs["dataset"] == dataset) & (runs["width"] == width) & runs["test_acc"].notna()
                & runs["units"].notna()]
    acc = runs.groupby(["model", "units"], as_index=False).agg(accuracy=("test_acc", "max"), runs=("id", "count"))
    return acc.astype({"units": int}).assign(accuracy=(acc["accuracy"] * 100).round(2))


c1, c2, c3, c4 = st.columns([3, 3, 3, 2])
dataset = c1.selectbox("Dataset (input shape)", list(DATASETS), help="Sets input channels, size and classes:\n\n" +
                       "\n\n".join(DATASETS[d].summary() for d in DATASETS))
units = c2.slider("Units per network (0 = paper's)", 0, 4, 0, key="arch_units",
                  help="0 uses the paper's count: 2 on MNIST, 3 on CIFAR-10 and SVHN; GoogLeNet 2 on all.")
width = c3.slider("Width (maps per unit)", 8, 128, 32, step=8)
expand = c4.slider("Expansion N/C", 1, MAX_EXPAND, 1, key="arch_expand",
                   help="The multi-scale units' 1x1 expansion to N = expand x C maps (1 is our reading of the "
                        "paper, ARCHITECTURE.md); the other units have none.")

with torch_threads(1):  # batch-1 traces of tiny nets: a second thread only waits, and on a busy machine it spins
    df = compare_table(dataset, units or None, width, expand)
prefetch(dataset, units or None, width, width_step=8, widths=(8, 128), datasets=tuple(DATASETS))  # the next moves
df = df.merge(best_accuracy(dataset, width), on=["model", "units"], how="left")
df["runs"] = df["runs"].fillna(0).astype(int)
measure = st.toggle("Measure speed on this machine", key="arch_speed",
                    help="Batch-1 inference latency (median, after warm-up, 1 thread) and training images/s "
                         "(Adam, batch 128, random data). Takes a few seconds per model for each setting "
                         "(about 20 s for all five), then cached.")
speed_cols = []
if measure:
    speed, when = speed_table(dataset, units or None, width)
    df = df.merge(speed, on=["model", "units"], how="left")
    speed_cols = ["latency_1t_ms", "train_img_s"]  # one latency column, at one stated thread count
    if st.toggle("Beside ONNX Runtime", key="arch_onnx",
                 help="Each model exported to ONNX and timed in PyTorch eager and ONNX Runtime at batch 1 and 64, "
                      "1 thread and all cores (median). About 3 s per model, then cached."):
        onnx = onnx_speed(dataset, units or None, width, expand)
        df = df.merge(onnx, on=["model", "units"], how="left")
        speed_cols += [c for c in ONNX_COLUMNS if c in onnx.columns]
st.subheader(f"Every unit type on {dataset}, width {width}" + (f", expansion N/C {expand}" if expand > 1 else ""))
st.caption("Units per network: " + ", ".join(f"{m} {u}" for m, u in zip(df["model"], df["units"]))
           + (" (the paper's counts)" if not units else ""))
st.dataframe(df[["model", "units", "expand", "accuracy", "runs", "params", "macs", *speed_cols, "unit_params", "bn_macs",
                 "unit_ratio", "params_ratio", "macs_ratio"]], hide_index=True, placeholder=MISSING,
             column_config={"macs": st.column_config.NumberColumn("MACs / image (conv+FC)", format="localized"),
                            "bn_macs": st.column_config.NumberColumn("BatchNorm ops / image", format="localized"),
                            "params": st.column_config.NumberColumn("parameters", format="localized"),
                            "unit_params": st.column_config.NumberColumn("parameters / unit", format="localized"),
                            "expand": st.column_config.NumberColumn("expansion N/C", format="%d"),
                            "unit_ratio": st.column_config.NumberColumn("unit params × MobileNet", format="%.2f×"),
                            "params_ratio": st.column_config.NumberColumn("params × MobileNet", format="%.2f×"),
                            "macs_ratio": st.column_config.NumberColumn("MACs × MobileNet", format="%.2f×"),
                            "accuracy": st.column_config.NumberColumn("best acc %", format="%.2f"),
                            "runs": st.column_config.NumberColumn("runs", format="%d"),
                            "latency_1t_ms": st.column_config.NumberColumn("batch-1 latency, ms (1 thread)",
                                                                           format="%.2f"),
                            "train_img_s": st.column_config.NumberColumn("train img/s", format="%.0f"),
                            **ONNX_COLUMNS})
st.caption("MACs are fvcore's conv and linear multiply-adds (one multiply-add = 1); BatchNorm is counted apart. "
           "Not counted by fvcore: "
           + (", ".join(sorted({o for ops in df["uncounted_ops"] for o in ops.split(", ") if o})) or "nothing")
           + ". Accuracy: the best finished run stored at this dataset, unit count and width (any preset).")
if measure:
    st.caption(f"Speed measured on this machine's CPU at {when}, with whatever else was running at the time: "
               "ms = median batch-1 inference latency; train img/s = Adam steps at batch 128 on random data.")
    if st.button("Measure again"):
        speed_table.clear(dataset, units or None, width)
        onnx_speed.clear(dataset, units or None, width, expand)
        st.rerun()
b1, b2, b3 = st.columns(3)
for col, y, title in ((b1, "params", "Parameters"), (b2, "unit_params", "Parameters per unit"),
                      (b3, "macs", "MACs per image")):
    col.plotly_chart(px.bar(df, x="model", y=y, color="model", title=title, color_discrete_map=model_colours(),
                            labels={y: title.lower()}).update_layout(showlegend=False))

model = st.selectbox("Unit diagram and per-layer breakdown of", list_units(), index=list_units().index("ms_add"))
cfg = config_for(model, dataset, units=units or None, width=width, expand=expand if uses_expand(model) else 1)
with torch_threads(1):
    layers, n_unit = layer_profile(cfg.to_dict())
left, right = st.columns([3, 2])
try:
    left.graphviz_chart(diagram(cfg.to_dict()))
except ValueError as e:
    left.info(str(e))
left.caption(f"One {model} unit ({n_unit:,} parameters), traced from the module with torch.fx; "
             "conv + BN (+ ReLU) drawn as one box.")
right.dataframe(layers, hide_index=True, height=420, placeholder=MISSING)
if st.toggle(f"Time each layer of {model} on this machine (about {estimate_s(cfg):.0f} s, then cached)",
             key="arch_layertime", help="Forward passes at batch 1 and at the training batch (128), 1 thread, eval "
                                        "mode, random inputs: median ms per layer, its share of the forward time "
                                        "beside its share of MACs, and GFLOP/s (2 x MACs x batch / time)."):
    again = st.button("Time the layers again", key="arch_layertime_again")
    if again:
        layer_times.clear(cfg.to_dict())
    timed = layer_times(cfg.to_dict(), _fresh=again)
    st.plotly_chart(layer_time_chart(timed, f"{model}: share of the forward time against share of MACs, per layer"))
    st.dataframe(timed[["layer", "kind", *LAYER_TIME_COLUMNS]], hide_index=True, column_config=LAYER_TIME_COLUMNS,
                 placeholder=MISSING)
    st.caption("Above the diagonal a layer takes more of the time than of the arithmetic: it waits on memory "
               "(depthwise convs, BatchNorm, pooling, the concatenation). '(own ops)' rows are what a module computes "
               "between its layers (the merge and the residual add, flatten); `pool` is one module run after every "
               "unit. The rows add up to the whole forward timed without hooks: "
               + ", ".join(f"batch {b} {timed[f'ms_b{b}'].sum():.2f} of {timed.attrs['forward_ms'][b]:.2f} ms"
                           for b in BATCHES) + ".")
with st.expander(f"The {model} unit as PyTorch prints it"):
    st.code(repr(get_unit(model)(cfg)), language="text")
