"""ONNX export: round trip of a shipped checkpoint, parity on real-format test images, a tampered file failing the
check, metadata, dynamic batch, and the CLI on a run of the store."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from conftest import ROOT, digits_npz
from mscompare import cli
from mscompare import export as ex
from mscompare.checkpoints import save_checkpoint
from mscompare.config import config_for, preset
from mscompare.images import open_image
from mscompare.models import build_model
from mscompare.predict import model_input, preprocess
from mscompare.runs import RunStore

pytestmark = pytest.mark.xdist_group("export")  # one worker builds the module-scoped fixture

SAMPLES = ROOT / "samples" / "mnist"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """shipped mnist/ms_add exported once, its parity checked on samples/mnist (the empty data root has no
    MNIST): (source, path to the .onnx, parity)."""
    d = tmp_path_factory.mktemp("onnx")
    src = ex.from_shipped("mnist/ms_add")
    parity = ex.export(src, d / "ms_add.onnx", data_root=d / "no-data")
    return src, d / "ms_add.onnx", parity


def sample_batch(meta):
    files = sorted(SAMPLES.glob("*.png"))
    x = torch.cat([model_input(preprocess(open_image(f), 1, 28), meta) for f in files])
    return x, [f.stem.split("_")[0] for f in files]


def test_round_trip_on_the_sample_images(shipped):
    src, path, parity = shipped
    assert parity.images == 10 and "samples/mnist" in parity.where and parity.agreement == 1.0
    assert parity.max_abs_diff <= ex.TOLERANCE
    x, labels = sample_batch(src.meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"input": x.numpy()})[0]
    with torch.inference_mode():
        ref = src.model(x).numpy()
    assert np.abs(out - ref).max() < 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()
    predicted = [src.meta["classes"][i] for i in out.argmax(1)]
    assert sum(p == t for p, t in zip(predicted, labels)) >= 9, (predicted, labels)  # a ~99% MNIST model


def test_metadata_is_json_and_matches_the_checkpoint(shipped):
    src, path, _ = shipped
    md = ex.metadata(path)
    assert json.loads(md["classes"]) == src.meta["classes"] == [str(i) for i in range(10)]
    assert json.loads(md["mean"]) == pytest.approx(src.meta["norm"]["mean"])
    assert json.loads(md["std"]) == pytest.approx(src.meta["norm"]["std"])
    assert "N x 1 x 28 x 28 float32" in md["input"] and "mean/std" in md["input"]
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]


def test_batch_axis_is_dynamic(shipped):
    src, path, _ = shipped
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, _ = sample_batch(src.meta)
    for n in (1, 5):
        out = sess.run(["logits"], {"input": x[:n].numpy()})[0]
        assert out.shape == (n, 10)
        with torch.inference_mode():
            assert np.abs(out - src.model(x[:n]).numpy()).max() < 1e-4


def test_parity_on_real_format_test_images(shipped, tmp_path):
    """The dataset's own npz test split (here an MNIST-shaped one) is used when it is on disk."""
    src, path, _ = shipped
    digits_npz(tmp_path, name="mnist", n_train=20, n_test=120)
    x, where = ex.parity_images(src, n=50, data_root=tmp_path)
    assert x.shape == (50, 1, 28, 28) and where.startswith("50 mnist test images")
    parity = ex.check_parity(path, src.model, x, where)
    assert parity.images == 50 and parity.agreement == 1.0 and parity.max_abs_diff <= ex.TOLERANCE
    x, _ = ex.parity_images(src, n=0, data_root=tmp_path)
    assert len(x) == 120


def tampered(good: Path, out: Path) -> Path:
    """A copy of the export with one initializer changed: the last layer's bias of class 3, by 0.01."""
    m = onnx.load(str(good))
    init = next(i for i in m.graph.initializer if i.name == "fc2.bias")
    b = numpy_helper.to_array(init).copy()
    b[3] += 0.01
    init.CopyFrom(numpy_helper.from_array(b, init.name))
    onnx.save(m, str(out))
    return out


def test_tampered_export_fails_the_parity_check(shipped, tmp_path, monkeypatch, capsys):
    src, good, _ = shipped
    x, _ = sample_batch(src.meta)
    with pytest.raises(ex.ExportError, match=r"parity check failed .* max \|Δlogit\| 0\.01 > 0\.001"):
        ex.check_parity(tampered(good, tmp_path / "bad.onnx"), src.model, x, "samples")
    # through export() and the CLI: an error, exit 1, one line, and no file left behind
    monkeypatch.setattr(ex, "write_onnx", lambda model, cfg, meta, path: tampered(good, Path(path)))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ex.ExportError, match="the file was not kept"):
        ex.export(src, out / "a.onnx", data_root=tmp_path)
    a = cli.build_parser().parse_args(["export", "--shipped", "mnist/ms_add", "--onnx", str(out / "b.onnx"),
                                       "--data-root", str(tmp_path)])
    cli._defaults(a)
    assert cli.cmd_export(a) == 1
    err = capsys.readouterr().err
    assert err.startswith("mscompare: error: parity check failed") and err.count("\n") == 1, err
    assert list(out.iterdir()) == []


def test_cli_exports_a_run_of_the_store(tmp_path, capsys):
    """A finished run (here a freshly built small model saved as its checkpoint) exported by its id, checked on
    its own dataset's npz test split."""
    digits_npz(tmp_path / "data", name="tinydigits", n_train=20, n_test=40)
    store = RunStore(tmp_path / "runs")
    mcfg = config_for("alexnet", "tinydigits", width=8, in_channels=1, input_size=28, num_classes=4)
    tcfg = preset("quick", "tinydigits", data_root=str(tmp_path / "data"))
    rid = store.create(mcfg, tcfg)
    ckpt = save_checkpoint(tmp_path / "runs" / "checkpoints" / f"{rid}.safetensors", build_model(mcfg), mcfg,
                           {"classes": ["tl", "tr", "bl", "br"], "norm": {"mean": [0.1], "std": [0.3]},
                            "dataset": "tinydigits"})
    store.update(rid, status="done", checkpoint=str(ckpt))
    out = tmp_path / "run.onnx"
    a = cli.build_parser().parse_args(["export", rid, "--runs-dir", str(tmp_path / "runs"), "--onnx", str(out),
                                       "--json"])
    cli._defaults(a)
    assert cli.cmd_export(a) == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 40 and res["top1_agreement"] == 1.0 and res["max_abs_diff"] <= ex.TOLERANCE
    assert "tinydigits test images" in res["parity_images"]
    assert json.loads(ex.metadata(out)["classes"]) == ["tl", "tr", "bl", "br"]
    a = cli.build_parser().parse_args(["export", "20990101-000000-abcdef", "--runs-dir", str(tmp_path / "runs"),
                                       "--onnx", str(tmp_path / "x.onnx")])
    cli._defaults(a)
    assert cli.cmd_export(a) == 1 and "no run '20990101-000000-abcdef'" in capsys.readouterr().err


def test_no_test_images_is_a_clear_error(tmp_path):
    src = ex.from_shipped("mnist/alexnet")
    src.dataset = "elsewhere"  # neither on disk nor in samples/
    with pytest.raises(ex.ExportError, match="no test images to check shipped mnist/alexnet"):
        ex.export(src, tmp_path / "a.onnx", data_root=tmp_path)
    assert not (tmp_path / "a.onnx").exists()
