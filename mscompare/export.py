"""ONNX export of a checkpoint (dynamic batch; class names and normalization as metadata), its parity with PyTorch
under ONNX Runtime on real test images, checked at every export, and the latency of both runtimes."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mscompare.checkpoints import SHIPPED, CheckpointError, load_checkpoint, read_manifest
from mscompare.predict import normalize
from mscompare.settings import SOURCE, data_root_for

INPUT, OUTPUT = "input", "logits"  # the graph's input (normalized images) and output names
TOLERANCE = 1e-3  # the largest |logit difference| an export may show; fp32 reordering gives about 1e-5
PARITY_IMAGES = 1000  # test images checked by default (evenly spaced through the split); 0: the whole split
SAMPLES = SOURCE / "samples"  # ten real test images per shipped dataset, named <class>_<index>.png


class ExportError(RuntimeError):
    """An export that can't be made or that failed its parity check; the message is one line."""


@dataclass
class Source:
    """What is exported: a loaded checkpoint, a name for messages, and where its dataset's test split lies."""
    model: torch.nn.Module
    cfg: object  # ModelConfig
    meta: dict
    name: str
    dataset: str | None = None
    data_root: str | None = None  # None: the settings' data root that holds the dataset
    image_size: int | None = None
    skip_bad: bool = False


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float
    agreement: float  # the share of images with the same top-1 class in both runtimes
    where: str  # which images, in words

    def line(self) -> str:
        return (f"parity on {self.where}: max |Δlogit| {self.max_abs_diff:.2e} (limit {TOLERANCE:g}), "
                f"top-1 agreement {self.agreement:.2%} of {self.images}")


def _checked(path, cfg, meta: dict, name: str) -> None:
    """Class names and a per-channel normalization: what the ONNX metadata is made of."""
    norm = meta.get("norm") or {}
    if len(meta.get("classes") or []) != cfg.num_classes:
        raise ExportError(f"{name} ({path}) has no class names for its {cfg.num_classes} outputs")
    for k in ("mean", "std"):
        v = norm.get(k)
        if not isinstance(v, list) or len(v) != cfg.in_channels or \
                not all(isinstance(a, (int, float)) and np.isfinite(a) and (k == "mean" or a > 0) for a in v):
            raise ExportError(f"{name} ({path}) has no usable normalization {k} for its {cfg.in_channels} channel(s)")


def from_run(store, rid: str) -> Source:
    """A finished run of the store, with its dataset, data root and image size from its training config."""
    row = store.get(rid)
    if row is None:
        raise ExportError(f"no run {rid!r} in {store.path}")
    if row["status"] != "done" or not row.get("checkpoint"):
        raise ExportError(f"run {rid} is {row['status']}" + (" and saved no checkpoint" if row["status"] == "done"
                                                             else ", not done: only a finished run has a checkpoint"))
    path = Path(row["checkpoint"])
    if not path.is_file() and not path.is_absolute():  # a relative path stored by a trainer in another folder
        path = Path(store.dir) / "checkpoints" / path.name
    model, cfg, meta = _load(path)
    _checked(path, cfg, meta, f"run {rid}")
    tcfg = json.loads(row["train_config"] or "{}")
    return Source(model, cfg, meta, f"run {rid}", tcfg.get("dataset") or row["dataset"], tcfg.get("data_root"),
                  tcfg.get("image_size") or None, bool(tcfg.get("skip_bad")))


def from_shipped(spec: str, root: str | Path = SHIPPED) -> Source:
    """A shipped checkpoint named DATASET/MODEL (e.g. mnist/ms_add), verified against the manifest's sha256."""
    root = Path(root)
    try:
        entries = {f"{e['dataset']}/{e['model']}": e for e in read_manifest(root)}
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{root / 'manifest.json'} is not a valid manifest: {e}") from e
    if spec not in entries:
        raise ExportError(f"no shipped checkpoint {spec!r} in {root / 'manifest.json'}; choose one of "
                          + ", ".join(sorted(entries)))
    e = entries[spec]
    path = root / e["file"]
    if not path.resolve().is_relative_to(root.resolve()):
        raise ExportError(f"the manifest names {e['file']}, outside {root}")
    model, cfg, meta = _load(path, e.get("sha256"))
    _checked(path, cfg, meta, f"shipped {spec}")
    return Source(model, cfg, meta, f"shipped {spec}", e["dataset"])


def from_file(path: str | Path) -> Source:
    """A checkpoint file; its dataset is the one its meta names."""
    model, cfg, meta = _load(Path(path))
    _checked(path, cfg, meta, str(path))
    return Source(model, cfg, meta, str(path), meta.get("dataset"))


def _load(path: Path, sha: str | None = None):
    try:
        return load_checkpoint(path, sha256=sha)
    except CheckpointError as e:
        raise ExportError(str(e)) from None


def parity_images(src: Source, n: int = PARITY_IMAGES, data_root: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """Normalized real test images of the source's dataset and where they came from, in words: n images evenly
    spaced through the test split (0: all of it; the CIFAR-10 copy is sorted by class, so never a prefix). Where
    the split is not on disk (it is never downloaded here), the repository's samples/<dataset>/ images."""
    from mscompare.data import DatasetError, load_split

    cfg, ds = src.cfg, src.dataset
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    why = f"{src.name} names no dataset"
    if ds:
        root = Path(data_root or src.data_root or data_root_for(ds))
        try:
            test = load_split(ds, root, train=False, download=False, size=src.image_size, skip_bad=src.skip_bad)
        except (DatasetError, OSError) as e:
            why = f"no readable {ds} test split under {root} ({type(e).__name__})"
        else:
            if tuple(test.shape) != shape:
                raise ExportError(f"the {ds} test images in {root} are {tuple(test.shape)} (C, H, W) but "
                                  f"{src.name} takes {shape}")
            x = test.x
            if 0 < n < len(x):
                x = x[torch.linspace(0, len(x) - 1, n).round().long()]
            return normalize(x, src.meta), f"{len(x):,} {ds} test images ({root / ds})"
    files = sorted((SAMPLES / ds).glob("*.png")) if ds else []
    if not files:
        raise ExportError(f"no test images to check {src.name}'s export on: {why}, and samples/ has none for it; "
                          "point the data root at the dataset (the CLI's --data-root)")
    from mscompare.images import open_image
    from mscompare.predict import preprocess

    arr = np.stack([preprocess(open_image(f), cfg.in_channels, cfg.input_size, invert="no") for f in files])
    return normalize(torch.from_numpy(arr), src.meta), f"{len(files)} sample test images (samples/{ds}; {why})"


def write_onnx(model: torch.nn.Module, cfg, meta: dict, path: str | Path) -> Path:
    """Export with torch.onnx's default (torch.export-based) exporter, batch axis dynamic, then add the class
    names and normalization to metadata_props: classes, mean, std (JSON lists) and input (a sentence)."""
    import onnx

    model.eval()
    x = torch.zeros(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    try:
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                 dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                                 verbose=False)
    except Exception as e:  # noqa: BLE001 - torch.export and onnxscript raise many types; one line names it
        raise ExportError(f"torch.onnx.export failed for {cfg.model}: {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}") from e
    proto = prog.model_proto
    colour = "RGB" if cfg.in_channels == 3 else "grayscale"
    props = {"classes": json.dumps(meta["classes"]), "mean": json.dumps(meta["norm"]["mean"]),
             "std": json.dumps(meta["norm"]["std"]),
             "input": f"N x {cfg.in_channels} x {cfg.input_size} x {cfg.input_size} float32 ({colour}), "
                      "pixels scaled to 0..1 then normalized per channel with mean/std: (x / 255 - mean) / std",
             "output": f"N x {cfg.num_classes} logits, in the order of classes (softmax for probabilities)",
             "model_config": json.dumps(cfg.to_dict()), "dataset": str(meta.get("dataset") or "")}
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"mscompare {cfg.model}: {props['input']}"
    path = Path(path)
    onnx.save(proto, str(path))
    return path


def metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an exported file, as ONNX Runtime reads them."""
    return dict(_session(path, 1).get_modelmeta().custom_metadata_map)


def _session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(path: str | Path, model: torch.nn.Module, x: torch.Tensor, where: str,
                 tolerance: float = TOLERANCE, batch: int = 500) -> Parity:
    """Logits of the file under ONNX Runtime against the PyTorch model's on the same normalized images. A
    difference above `tolerance` (or a non-finite output) is an ExportError; with every difference within it,
    the top-1 classes can only differ where two logits tie within 2 x tolerance."""
    try:
        sess = _session(path, 0)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
        raise ExportError(f"ONNX Runtime can't load {path}: {' '.join(str(e).split())[:200]}") from e
    diff, same = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            ref = model(xb).float().numpy()
            out = sess.run([OUTPUT], {INPUT: xb.numpy()})[0]
            if out.shape != ref.shape or not np.isfinite(out).all():
                raise ExportError(f"parity check failed for {path}: ONNX Runtime gave "
                                  f"{'shape ' + str(out.shape) if out.shape != ref.shape else 'non-finite logits'}")
            diff = max(diff, float(np.abs(out - ref).max()))
            same += int((out.argmax(1) == ref.argmax(1)).sum())
    res = Parity(len(x), diff, same / max(len(x), 1), where)
    if not diff <= tolerance:
        raise ExportError(f"parity check failed for {path}: max |Δlogit| {diff:.3g} > {tolerance:g} against "
                          f"PyTorch on {where} (top-1 agreement {res.agreement:.2%}); the file was not kept")
    return res


def export(src: Source, path: str | Path, n: int = PARITY_IMAGES, data_root: str | Path | None = None,
           tolerance: float = TOLERANCE) -> Parity:
    """Write `src` to `path` as ONNX and check its parity on real test images. The file is written under a
    temporary name beside `path` and takes the final name only once its parity holds."""
    path = Path(path)
    if n < 0:
        raise ExportError(f"the number of parity images must be 0 (all) or more, got {n}")
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}")
    if not path.resolve().parent.is_dir():
        raise ExportError(f"can't write {path}: the folder {path.resolve().parent} does not exist")
    x, where = parity_images(src, n, data_root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_onnx(src.model, src.cfg, src.meta, tmp)
        res = check_parity(tmp, src.model, x, where, tolerance)
        tmp.replace(path)
    except OSError as e:
        raise ExportError(f"can't write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return res


def export_bytes(src: Source, n: int = PARITY_IMAGES) -> tuple[bytes, Parity]:
    """The checked ONNX file's bytes (for a download button) and its parity."""
    with tempfile.TemporaryDirectory() as d:
        res = export(src, Path(d) / "model.onnx", n)
        return (Path(d) / "model.onnx").read_bytes(), res


def _median_ms(call, budget_s: float, warmup: int = 2, reps: int = 30, min_reps: int = 5) -> float:
    """Median wall time (ms) of `call` after `warmup` untimed calls; stops after `budget_s` once it has
    `min_reps` timed ones."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < reps:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_reps and time.perf_counter() > deadline:
            break
    return statistics.median(times) * 1e3


def latency(model: torch.nn.Module, cfg, path: str | Path, batches=(1, 64), threads=(1, 0),
            budget_s: float = 0.25) -> pd.DataFrame:
    """Median inference latency (ms) of PyTorch eager (inference mode) and of the ONNX file under ONNX Runtime,
    per batch size and intra-op thread count (0: every core of this machine), on this machine now."""
    from mscompare.speed import torch_threads

    cores = os.cpu_count() or 1
    rows = []
    g = torch.Generator().manual_seed(0)
    for t in threads:
        n = t or cores
        sess = _session(path, n)
        for b in batches:
            x = torch.randn(b, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
            xn = x.numpy()
            with torch_threads(n), torch.inference_mode():
                pt = _median_ms(lambda: model(x), budget_s)
            ort_ms = _median_ms(lambda: sess.run([OUTPUT], {INPUT: xn}), budget_s)
            rows.append({"batch": b, "threads": n, "all_cores": not t, "pytorch_ms": pt, "onnxruntime_ms": ort_ms,
                         "speedup": pt / ort_ms})
    return pd.DataFrame(rows)


def speed_all(dataset: str = "mnist", units: int | None = None, width: int = 32, expand: int = 1,
              models: list[str] | None = None, budget_s: float = 0.2) -> pd.DataFrame:
    """Each model freshly built at the dataset's shape (seed 0), exported to ONNX, checked on random inputs and
    timed in both runtimes (latency()): model, units and latency()'s columns, a row per batch and thread count."""
    from mscompare.config import config_for
    from mscompare.models import build_model, list_units, uses_expand

    frames = []
    for name in models or list_units():
        cfg = config_for(name, dataset, units=units, width=width, expand=expand if uses_expand(name) else 1)
        with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG
            torch.manual_seed(0)
            model = build_model(cfg).eval()
        meta = {"classes": [str(i) for i in range(cfg.num_classes)],
                "norm": {"mean": [0.0] * cfg.in_channels, "std": [1.0] * cfg.in_channels}}
        x = torch.randn(8, cfg.in_channels, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(1))
        with tempfile.TemporaryDirectory() as d:
            f = write_onnx(model, cfg, meta, Path(d) / f"{name}.onnx")
            check_parity(f, model, x, "8 random inputs")
            frames.append(latency(model, cfg, f, budget_s=budget_s).assign(model=name, units=cfg.units))
    df = pd.concat(frames, ignore_index=True)
    return df[["model", "units", *(c for c in df.columns if c not in ("model", "units"))]]


def wide(speed: pd.DataFrame) -> pd.DataFrame:
    """speed_all() as one row per model: model, units and {pytorch,onnx}_b<batch>_{1t,all}_ms columns."""
    df = speed.assign(t=np.where(speed["all_cores"], "all", "1t"))
    out = df.pivot_table(index=["model", "units"], columns=["batch", "t"], values=["pytorch_ms", "onnxruntime_ms"],
                         sort=False)
    out.columns = [f"{'pytorch' if v == 'pytorch_ms' else 'onnx'}_b{b}_{t}_ms" for v, b, t in out.columns]
    return out.reset_index()
