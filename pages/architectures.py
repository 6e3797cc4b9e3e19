"""Architectures page: sliders for units and width; params/MACs table, charts, per-layer view, unit structure."""
import plotly.express as px
import streamlit as st

from mscompare.config import DATASETS, config_for
from mscompare.models import get_unit, list_units
from ui import compare_table, layer_profile, page_setup

page_setup("pages/architectures.py")

st.title("Architectures")
c1, c2, c3 = st.columns(3)
dataset = c1.selectbox("Dataset (input shape)", list(DATASETS), help="Sets input channels, size and classes")
units = c2.slider("Units per network (0 = paper's)", 0, 4, 0, key="arch_units",
                  help="0 uses the paper's count: 2 on MNIST, 3 on CIFAR-10 and SVHN; GoogLeNet 2 on all.")
width = c3.slider("Width (maps per unit)", 8, 128, 32, step=8)

df = compare_table(dataset, units or None, width)
st.subheader(f"Every unit type on {dataset}, width {width}")
st.caption("Units per network: " + ", ".join(f"{m} {u}" for m, u in zip(df["model"], df["units"]))
           + (" (the paper's counts)" if not units else ""))
st.dataframe(df[["model", "units", "params", "unit_params", "macs", "bn_macs", "unit_ratio", "params_ratio",
                 "macs_ratio"]], hide_index=True,
             column_config={"macs": st.column_config.NumberColumn("MACs / image (conv+FC)", format="%d"),
                            "bn_macs": st.column_config.NumberColumn("BatchNorm ops / image", format="%d"),
                            "params": st.column_config.NumberColumn(format="%d"),
                            "unit_params": st.column_config.NumberColumn(format="%d")})
st.caption("MACs are fvcore's conv and linear multiply-adds (one multiply-add = 1); BatchNorm is counted apart. "
           "Not counted by fvcore: "
           + (", ".join(sorted({o for ops in df["uncounted_ops"] for o in ops.split(", ") if o})) or "nothing"))
b1, b2, b3 = st.columns(3)
for col, y, title in ((b1, "params", "Parameters"), (b2, "unit_params", "Parameters per unit"),
                      (b3, "macs", "MACs per image")):
    col.plotly_chart(px.bar(df, x="model", y=y, color="model", title=title).update_layout(showlegend=False))

model = st.selectbox("Per-layer breakdown of", list_units(), index=list_units().index("ms_add"))
cfg = config_for(model, dataset, units=units or None, width=width)
layers, n_unit = layer_profile(cfg.to_dict())
left, right = st.columns([3, 2])
left.dataframe(layers, hide_index=True, height=420)
right.text(f"One {model} unit ({n_unit:,} parameters)")
right.code(repr(get_unit(model)(cfg)), language="text")
