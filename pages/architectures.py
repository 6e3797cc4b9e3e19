"""Architectures page: sliders for units and width; params/MACs table, charts, per-layer view, unit structure."""
import plotly.express as px
import streamlit as st

from mscompare import DATASETS, MODELS, config_for
from mscompare.profile import profile_model
from ui import compare_table, page_setup

page_setup("pages/architectures.py")

st.title("Architectures")
c1, c2, c3 = st.columns(3)
dataset = c1.selectbox("Dataset (input shape)", list(DATASETS), help="Sets input channels, size and classes")
units = c2.slider("Units per network", 1, 4, 2 if dataset == "mnist" else 3)
width = c3.slider("Width (maps per unit)", 8, 128, 32, step=8)

df = compare_table(dataset, units, width)
st.subheader(f"All five models on {dataset}: {units} units, width {width}")
st.dataframe(df[["model", "params", "unit_params", "macs", "unit_ratio", "params_ratio", "macs_ratio"]],
             hide_index=True, column_config={"macs": st.column_config.NumberColumn("MACs / image", format="%d")})
st.caption("MACs are fvcore's 'flops' (one multiply-add = 1). Not counted by fvcore: "
           + (", ".join(sorted({o for ops in df["uncounted_ops"] for o in ops.split(", ") if o})) or "nothing"))
b1, b2, b3 = st.columns(3)
for col, y, title in ((b1, "params", "Parameters"), (b2, "unit_params", "Parameters per unit"),
                      (b3, "macs", "MACs per image")):
    col.plotly_chart(px.bar(df, x="model", y=y, color="model", title=title).update_layout(showlegend=False))

model = st.selectbox("Per-layer breakdown of", list(MODELS), index=list(MODELS).index("ms_add"))
prof = profile_model(config_for(model, dataset, units=units, width=width))
left, right = st.columns([3, 2])
left.dataframe(prof.layers, hide_index=True, height=420)
right.markdown(f"**One `{model}` unit** ({prof.unit_params:,} parameters)")
right.code(repr(MODELS[model](width)), language="text")
