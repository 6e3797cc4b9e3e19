"""Streamlit entry point: `streamlit run app.py`. Home page and navigation to the five pages."""
import streamlit as st
import torch

import ui

# The server process only runs batch-1 predictions and profiles: one intra-op thread is as fast for nets this
# small and never spins on cores a training worker or the browser needs (2 threads: googlenet 400 ms when busy).
torch.set_num_threads(1)

st.set_page_config(page_title="mscompare", page_icon=":material/compare:", layout="wide")


def home():
    st.title("mscompare")
    st.markdown(
        "Compare small CNN architectures side by side: parameters and MACs, training speed, accuracy, "
        "and predictions on your own images.\n\n"
        "The core is the multi-scale separable unit of **G. Wang, G. Yuan, T. Li, M. Lv, _An multi-scale "
        "learning network with depthwise separable convolutions_, IPSJ Transactions on Computer Vision and "
        "Applications 10:11 (2018)**. A 1x1 pointwise conv feeds a branch of one and a branch of two stacked "
        "3x3 depthwise-separable convs, merged by concatenation (method 1, `ms_concat`) or addition "
        "(method 2, `ms_add`), with a residual connection. It is compared with AlexNet-style (`alexnet`), "
        "MobileNet-style (`mobilenet`) and GoogLeNet-style (`googlenet`) units in the same network "
        "(input layer, 1-4 units, two fully connected layers).")
    st.page_link(architectures, label="Architectures: parameters, MACs and unit structure",
                 icon=":material/schema:")
    st.page_link(train, label="Train & compare: live accuracy curves", icon=":material/monitoring:")
    st.page_link(sweep, label="Sweep: grids of runs and the accuracy-per-cost frontier", icon=":material/grid_on:")
    st.page_link(predict, label="Predict: every model on your image", icon=":material/image_search:")
    st.page_link(runs, label="Runs: the history of every training", icon=":material/history:")
    st.caption("Reconstruction notes: docs/ARCHITECTURE.md. Reproduction: docs/RESULTS.md.")


architectures = st.Page("pages/architectures.py", title="Architectures", icon=":material/schema:")
train = st.Page("pages/train.py", title="Train & compare", icon=":material/monitoring:")
predict = st.Page("pages/predict.py", title="Predict", icon=":material/image_search:")
runs = st.Page("pages/runs.py", title="Runs", icon=":material/history:")
sweep = st.Page("pages/sweep.py", title="Sweep", icon=":material/grid_on:")
nav = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                     architectures, train, sweep, predict, runs])
ui.NAVIGATION["ready"] = True
if goto := st.session_state.pop("goto", None):  # a deep link that arrived before navigation was set up
    st.switch_page(goto)
nav.run()
