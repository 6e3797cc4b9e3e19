"""Predict page: the user picks Upload or Sample; every shipped model's top-3, its input and latency."""
from pathlib import Path

import streamlit as st

from mscompare.checkpoints import SHIPPED
from mscompare.predict import (ACCEPTED, MAX_MB, ImageError, PredictionError, display_copy, load_set, open_image,
                               predict, upload_types)
from ui import page_setup, plain

page_setup("pages/predict.py")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@st.cache_resource(show_spinner="Loading and verifying the checkpoints...")
def models(name: str, manifest_stamp: int):
    """Verified (sha256) once per set and manifest version; a re-shipped set is loaded again."""
    return load_set(name)


def manifest_stamp() -> int:
    try:
        return (SHIPPED / "manifest.json").stat().st_mtime_ns
    except OSError:
        return 0


st.title("Predict")
c1, c2 = st.columns([1, 2])
which = c1.radio("Checkpoint set", ["mnist", "cifar10"], horizontal=True)
invert = c1.selectbox("Invert colours", ["auto", "yes", "no"],
                      help="auto inverts images with a light background for the MNIST models")
source = c2.radio("Input", ["Upload", "Sample"], horizontal=True)
src = name = None
if source == "Upload":
    upload = c2.file_uploader(f"Upload an image ({ACCEPTED}, up to {MAX_MB} MB)", type=upload_types(),
                              max_upload_size=MAX_MB)
    if upload is not None:
        src, name = upload.getvalue(), upload.name
else:
    samples = sorted((SAMPLES / which).glob("*.png"))
    sample = c2.selectbox("Sample test image", [p.name for p in samples], index=None)
    if sample:
        src, name = SAMPLES / which / sample, sample

if src is None:
    st.info("Upload an image." if source == "Upload" else "Choose a sample.")
    st.stop()
try:
    image = open_image(src, name=name)
except ImageError as e:
    st.error(f"Can't use this file: {plain(e)}")
    st.stop()
try:
    loaded = models(which, manifest_stamp())
except Exception as e:  # noqa: BLE001 - missing, damaged or mismatched checkpoints
    st.error(f"Can't load the {which} checkpoints: {plain(e)}")
    st.stop()
try:
    result = predict(loaded, image, invert)
except (ImageError, PredictionError) as e:
    st.error(f"Can't predict {plain(name)}: {plain(e)}")
    st.stop()

st.image(display_copy(image), caption=f"{image.width}x{image.height}, mode {image.mode}", width=160)
st.text(name)
cols = st.columns(len(loaded))
for col, model in zip(cols, loaded):
    col.markdown(f"**{model}**")
    col.image(result["inputs"][model], caption="what the model saw", width=96, clamp=True)
    for t in result["predictions"][model]:
        col.progress(t["prob"], text=f"{plain(t['label'])}: {t['prob']:.1%}")
    col.caption(f"{result['latency_ms'][model]:.1f} ms")
