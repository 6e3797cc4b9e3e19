"""Docs page: the README, the results and the architecture notes rendered in the app, no network needed."""
from ui import page_setup

page_setup("pages/docs.py")  # first, as on every page: the title

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"results": ("Results: our reproduction", ROOT / "docs" / "RESULTS.md"),
        "architecture": ("Architecture: every choice the paper leaves open", ROOT / "docs" / "ARCHITECTURE.md"),
        "readme": ("README: install, run, data, seeds and significance", ROOT / "README.md")}

asked = st.query_params.get("doc", "results")
doc = st.radio("Document", list(DOCS), index=list(DOCS).index(asked) if asked in DOCS else 0, horizontal=True,
               format_func=lambda d: DOCS[d][0])
st.query_params["doc"] = doc
try:
    st.markdown(DOCS[doc][1].read_text(encoding="utf-8"))
except OSError as e:
    st.error(f"Can't read {DOCS[doc][1].name}: {e.strerror}")
