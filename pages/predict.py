"""Predict page: upload an image or pick a sample; every shipped model's top-3, its input and latency."""
from pathlib import Path

import streamlit as st

from mscompare.predict import ImageError, load_set, open_image, predict
from ui import page_setup

page_setup("pages/predict.py")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@st.cache_resource
def models(name: str):
    return load_set(name)


st.title("Predict")
c1, c2 = st.columns([1, 2])
which = c1.radio("Checkpoint set", ["mnist", "cifar10"], horizontal=True)
invert = c1.selectbox("Invert colours", ["auto", "yes", "no"],
                      help="auto inverts images with a light background for the MNIST models")
upload = c2.file_uploader("Upload an image", type=["png", "jpg", "jpeg", "bmp", "webp", "gif"])
samples = sorted((SAMPLES / which).glob("*.png"))
sample = c2.selectbox("...or pick a sample test image", [p.name for p in samples], index=None)

src = upload.getvalue() if upload is not None else (SAMPLES / which / sample if sample else None)
if src is None:
    st.info("Upload an image or choose a sample.")
    st.stop()
try:
    image = open_image(src)
    loaded = models(which)
except ImageError as e:
    st.error(f"Can't use this file: {e}")
    st.stop()
except Exception as e:  # noqa: BLE001 - missing/corrupt checkpoints
    st.error(f"Can't load the {which} checkpoints: {e}")
    st.stop()
result = predict(loaded, image, invert)
st.image(image, caption=f"your image ({image.width}x{image.height}, mode {image.mode})", width=160)
cols = st.columns(len(loaded))
for col, name in zip(cols, loaded):
    col.markdown(f"**{name}**")
    col.image(result["inputs"][name], caption="what the model saw", width=96, clamp=True)
    for t in result["predictions"][name]:
        col.progress(t["prob"], text=f"{t['label']}: {t['prob']:.1%}")
    col.caption(f"{result['latency_ms'][name]:.1f} ms")
