"""Predict page: shipped sets or your finished runs; Upload, Sample or Draw; top-3, input, latency, activation maps."""
from ui import page_setup

page_setup("pages/predict.py")  # first: the title, before the slow imports below

from pathlib import Path

import streamlit as st

from mscompare import ood
from mscompare.checkpoints import SHIPPED
from mscompare.groups import best_per_model, run_labels
from mscompare.export import export_bytes, from_run, from_shipped
from mscompare.images import ACCEPTED, MAX_MB, ImageError, open_image, upload_types
from mscompare.predict import (PredictionError, canvas_image, display_copy, finished_runs, load_runs, load_set,
                               predict)
from ui import onnx_download, plain, service, yield_to_training

yield_to_training()

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PAD = 280  # the drawing pad's side in pixels: 10x an MNIST digit


@st.cache_resource(show_spinner="Loading and verifying the checkpoints...")
def models(name: str, manifest_stamp: int):
    """Verified (sha256) once per set and manifest version; a re-shipped set is loaded again."""
    return load_set(name)


@st.cache_resource(show_spinner="Loading the runs' checkpoints...", max_entries=16)
def run_models(_store, ids: tuple[str, ...], stamp: tuple):
    """Loaded once per choice of runs (and checkpoint file versions)."""
    return load_runs(_store, list(ids))


def manifest_stamp() -> int:
    try:
        return (SHIPPED / "manifest.json").stat().st_mtime_ns
    except OSError:
        return 0


def file_stamp(path) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except (OSError, TypeError):
        return 0


def run_choice(row: dict) -> str:
    """A finished run as the choosers name it: groups.run_label, as on every page."""
    return labels[row["id"]]


c1, c2 = st.columns([1, 2])
origin = c1.radio("Checkpoints", ["Shipped sets", "My runs"], horizontal=True,
                  help="the shipped MNIST and CIFAR-10 models, or the finished runs of the run store")
if origin == "Shipped sets":
    which = c1.radio("Checkpoint set", ["mnist", "cifar10"], horizontal=True)
    sample_sets, what = [which], f"the {which} checkpoints"
    try:
        loaded = models(which, manifest_stamp())
    except Exception as e:  # noqa: BLE001 - missing, damaged or mismatched checkpoints
        st.error(f"Can't load {what}: {plain(e)}")
        st.stop()
else:
    store = service().store
    rows = {r["id"]: r for r in finished_runs(store)}
    if not rows:
        st.info("No finished run with a checkpoint yet: train one on the Train page, or use a shipped set.")
        st.stop()
    labels = run_labels(list(rows.values()))
    picked = c1.multiselect("Finished runs", list(rows), default=best_per_model(list(rows.values())),
                            format_func=lambda i: run_choice(rows[i]),
                            help="newest first; by default the most accurate run of each model on the data of "
                                 "the newest run. Runs on different data or image sizes can be mixed")
    if not picked:
        st.info("Choose one or more finished runs.")
        st.stop()
    sample_sets = sorted({rows[i]["dataset"] for i in picked if (SAMPLES / rows[i]["dataset"]).is_dir()})
    what = "the runs' checkpoints"
    try:
        loaded = run_models(store, tuple(picked), tuple(file_stamp(rows[i]["checkpoint"]) for i in picked))
    except Exception as e:  # noqa: BLE001 - a deleted or damaged checkpoint file
        st.error(f"Can't load {what}: {plain(e)}")
        st.stop()

with c1.expander("Export to ONNX"):
    if origin == "Shipped sets":
        model_name = st.selectbox("Model", list(loaded), key="onnx_model")
        spec = f"{which}/{model_name}"
        onnx_download(spec, spec, f"{which}-{model_name}.onnx", lambda: export_bytes(from_shipped(spec)))
    else:
        rid = st.selectbox("Run", picked, format_func=lambda i: run_choice(rows[i]), key="onnx_pick")
        onnx_download(rid, f"run {rid}", f"{rid}.onnx", lambda: export_bytes(from_run(store, rid)))

invert = c1.selectbox("Invert colours", ["auto", "yes", "no"],
                      help="auto inverts images with a light background for the digit (1-channel) models")
digits = all(cfg.in_channels == 1 for _, cfg, _ in loaded.values())
inputs = ["Upload", "Sample", "Draw"] if digits else ["Upload", "Sample"]
kept = st.session_state.get("input_choice", "Upload")  # the options change with the set: keep the user's choice
source = c2.radio("Input", inputs, index=inputs.index(kept) if kept in inputs else 0, horizontal=True)
st.session_state["input_choice"] = source
src = name = None
if source == "Upload":
    upload = c2.file_uploader(f"Upload an image ({ACCEPTED}, up to {MAX_MB} MB)", type=upload_types(),
                              max_upload_size=MAX_MB)
    if upload is not None:
        src, name = upload.getvalue(), upload.name
elif source == "Sample":
    samples = {(p.name if len(sample_sets) == 1 else f"{d}/{p.name}"): p
               for d in sample_sets for p in sorted((SAMPLES / d).glob("*.png"))}
    if not samples:
        c2.info("No sample images for these runs' data: upload or draw an image instead.")
    sample = c2.selectbox("Sample test image", list(samples), index=None)
    if sample:
        src, name = samples[sample], sample
else:
    try:
        from streamlit_drawable_canvas import st_canvas

        cleared = st.session_state.setdefault("pad_cleared", 0)  # a new key is a new, empty pad
        c2.caption("Draw with the mouse; hover over the pad for Undo and Redo.")
        with c2:
            pad = st_canvas(stroke_width=22, stroke_color="#FFFFFF", background_color="#000000", height=PAD,
                            width=PAD, drawing_mode="freedraw", return_image_data=True, key=f"pad-{cleared}")
    except Exception as e:  # noqa: BLE001 - the component missing or refused by this Streamlit
        st.error(f"The drawing pad is not available: {plain(e)}")
        st.stop()
    drawn = bool((pad.json_data or {}).get("objects")) and pad.image_data is not None
    c2.button("Clear the pad", icon=":material/ink_eraser:", disabled=not drawn, key="pad_clear",
              on_click=lambda: st.session_state.update(pad_cleared=cleared + 1))
    if drawn:
        src, name = pad.image_data, "drawing"

if src is None:
    st.info({"Upload": "Upload an image.", "Sample": "Choose a sample.",
             "Draw": "Draw a digit on the pad (white on black)."}[source])
    st.stop()
try:
    image = canvas_image(src) if source == "Draw" else open_image(src, name=name)
except ImageError as e:
    st.error(f"Can't use the drawing: {plain(e)}" if source == "Draw" else f"Can't use this file: {plain(e)}")
    st.stop()
try:
    result = predict(loaded, image, invert)
except (ImageError, PredictionError) as e:
    st.error(f"Can't predict {plain(name)}: {plain(e)}")
    st.stop()

if source != "Draw":  # a drawing is on the pad already: shown once
    st.image(display_copy(image), caption=f"{image.width}x{image.height}, mode {image.mode}", width=160)
    st.text(name)
for hint in ood.hints(result["ood"]):
    st.warning(hint, icon=":material/help:")
# the choice outlives the toggle: it is not drawn while no image is chosen, and Streamlit forgets undrawn widgets
show_cam = st.toggle("Show class-activation maps", value=st.session_state.get("cam_on", False), key="cam_toggle",
                     on_change=lambda: st.session_state.update(cam_on=st.session_state["cam_toggle"]),
                     help="Grad-CAM on each model's last unit: where in the input it found the evidence for its "
                          "top class (red: most), at the size of the input it saw")
maps = {}
if show_cam:
    from mscompare.cam import explain, overlay, scale_bar

    try:
        maps = explain(loaded, result["inputs"])
        st.image(scale_bar(), caption="colour scale of the maps: no evidence (blue) to most evidence (red)",
                 width=240)
    except Exception as e:  # noqa: BLE001 - the predictions still show
        st.warning(f"Can't compute the class-activation maps: {plain(e)}")
truth = Path(name).stem.rsplit("_", 1)[0] if source == "Sample" else None  # samples are named <class>_<index>
cols = st.columns(len(loaded))
for col, model in zip(cols, loaded):
    col.markdown(f"**{model}**")  # a model name and a run id's hex tail: no user text
    if truth is not None:
        top = result["predictions"][model][0]["label"]
        col.markdown(":green-badge[right]" if top == truth else f":red-badge[wrong: it is {plain(truth)}]")
    col.image(result["inputs"][model], caption="what the model saw", width=96, clamp=True)
    if model in maps:
        m = maps[model]
        col.image(overlay(result["inputs"][model], m["heatmap"]), width=96,
                  caption=f"evidence for {m['label']}")
    for t in result["predictions"][model]:
        col.progress(t["prob"], text=f"{plain(t['label'])}: {t['prob']:.1%}")
    col.caption(f"{result['latency_ms'][model]:.1f} ms")
