"""Streamlit entry point: `streamlit run app.py`. Home page (three steps to start, the headline result) and navigation."""
from pathlib import Path

import streamlit as st

import ui

ICON = Path(__file__).resolve().parent / "assets" / "icon.png"  # a local file: the favicon needs no network
st.set_page_config(page_title="mscompare", page_icon=str(ICON), layout="wide")


def home():
    st.title("mscompare")
    st.markdown(
        "Compare small CNN units side by side: parameters and MACs, training speed, accuracy with its seed "
        "spread, and predictions on your own images. The core is the multi-scale separable unit of **G. Wang, "
        "G. Yuan, T. Li, M. Lv, _An multi-scale learning network with depthwise separable convolutions_, IPSJ "
        "Transactions on Computer Vision and Applications 10:11 (2018)**: method 1 (`ms_concat`) and method 2 "
        "(`ms_add`), beside AlexNet-, MobileNet- and GoogLeNet-style units in the same network.")
    st.subheader("What we found")
    st.markdown(
        "On CIFAR-10 at the paper's protocol, 3 seeds each, paired on the same 10,000 test images:\n"
        "* the multi-scale units **really beat MobileNet**, the unit they extend, by 1.76 (method 2) to 2.18 "
        "(method 1) points, far less than the paper's \"up to 7%\";\n"
        "* **AlexNet really beats both** by 4.27-4.68 points;\n"
        "* method 1 vs method 2 is **not distinguishable** (+0.41 points, 95% CI -0.29 to +1.16).")
    st.page_link(docs, label="All results, tables and verdicts (RESULTS.md)", icon=":material/article:",
                 query_params={"doc": "results"})
    st.subheader("Start in three steps")
    c1, c2, c3 = st.columns(3)
    with c1.container(border=True):
        st.markdown("**1. Look at the units**\n\nParameters, MACs and a diagram of each unit, for any width.")
        st.page_link(architectures, label="Architectures", icon=":material/schema:")
    with c2.container(border=True):
        st.markdown("**2. Train and compare**\n\nPress Start: the `quick` preset trains every unit with 3 "
                    "seeds and says which differences are real.")
        st.page_link(train, label="Train & compare", icon=":material/monitoring:")
    with c3.container(border=True):
        st.markdown("**3. Predict**\n\nDraw a digit or upload an image: every shipped model answers, no "
                    "training needed.")
        st.page_link(predict, label="Predict", icon=":material/image_search:")
    st.caption("Also: grids of runs and the accuracy-per-cost frontier on the Sweep page, every run ever trained "
               "on the Runs page.")
    c1, c2, c3 = st.columns(3)
    c1.page_link(docs, label="How the units are built (ARCHITECTURE.md)", icon=":material/description:",
                 query_params={"doc": "architecture"})
    c2.page_link(docs, label="Install, data, seeds and significance (README)", icon=":material/menu_book:",
                 query_params={"doc": "readme"})
    c3.page_link(sweep, label="Sweep: the accuracy-per-cost frontier", icon=":material/grid_on:")


architectures, train, sweep, predict, runs, docs = (st.Page(path, title=title, icon=icon)
                                                  for path, (title, icon) in ui.PAGES.items())
# .streamlit/config.toml hides the sidebar navigation, so that the legacy one Streamlit builds from the pages/ folder
# is never shown in a fresh server process before this line has run; this navigation is shown.
st.set_option("client.showSidebarNavigation", True)
nav = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                     architectures, train, sweep, predict, runs, docs])
ui.NAVIGATION["ready"] = True
if goto := st.session_state.pop("goto", None):  # a deep link that arrived before navigation was set up
    st.switch_page(goto)
nav.run()
