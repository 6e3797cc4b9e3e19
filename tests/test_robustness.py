"""Corruption robustness: the seeded suite, accuracy under corruption against an independent computation, storage
with the run, the CLI's JSON and its errors."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mscompare import corruptions, robustness
from mscompare.checkpoints import save_checkpoint
from mscompare.config import TrainConfig
from mscompare.models import ModelConfig, build_model
from mscompare.runs import RunStore
from conftest import ROOT, digits_npz, mscompare_cli


def _finished_run(store: RunStore, root, model="alexnet", seed=0, channels=1) -> str:
    """A finished run of a fresh (seeded, untrained) small model on the tiny digits in `root`."""
    torch.manual_seed(seed)
    mcfg = ModelConfig(model=model, units=1, width=8, in_channels=channels, input_size=28, num_classes=4)
    tcfg = TrainConfig(dataset="tinydigits", data_root=str(root), iters=1, seed=seed)
    rid = store.create(mcfg, tcfg)
    meta = {"classes": ["tl", "tr", "bl", "br"], "dataset": "tinydigits", "run_id": rid,
            "norm": {"mean": [0.2] * channels, "std": [0.3] * channels}}
    path = save_checkpoint(store.dir / "checkpoints" / f"{rid}.safetensors", build_model(mcfg), mcfg, meta)
    store.update(rid, status="done", checkpoint=str(path), test_acc=0.0)
    return rid


@pytest.fixture
def store_and_root(tmp_path):
    digits_npz(tmp_path / "data", n_train=40, n_test=120)
    return RunStore(tmp_path / "runs"), tmp_path / "data"


@pytest.mark.parametrize("channels", [1, 3])
def test_severity_zero_is_clean_and_each_seed_gives_one_corrupted_set(channels):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 28, 28, channels), dtype=np.uint8))
    names = list(corruptions.suite(channels))
    assert len(names) >= 8 and {"rotate", "translate"} <= set(names) if channels == 1 else len(names) == 8
    for name in names:
        assert torch.equal(corruptions.corrupt(x, name, 0), x)
        a = corruptions.corrupt(x, name, 3, corruptions.generator(7, name, 3))
        b = corruptions.corrupt(x, name, 3, corruptions.generator(7, name, 3))
        assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
        assert not torch.equal(a, x), name
    noisy = [corruptions.corrupt(x, "gaussian_noise", s, corruptions.generator(0, "gaussian_noise", s))
             for s in corruptions.SEVERITIES]
    assert not torch.equal(noisy[2], corruptions.corrupt(x, "gaussian_noise", 3,
                                                         corruptions.generator(1, "gaussian_noise", 3)))
    dist = [(n.float() - x.float()).abs().mean().item() for n in noisy]
    assert dist == sorted(dist)  # a higher severity corrupts more
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corruptions.corrupt(x, "fog", 1)


def test_accuracy_under_jpeg_matches_an_independent_computation(store_and_root):
    store, root = store_and_root
    rid = _finished_run(store, root)
    (res,) = robustness.for_runs(store, [rid])
    # independently: the npz read with numpy, PIL's JPEG at the digits' severity-3 quality, the model by hand
    from mscompare.checkpoints import load_checkpoint

    model, _, meta = load_checkpoint(store.get(rid)["checkpoint"])
    with np.load(root / "tinydigits" / "test.npz") as z:
        x, y = z["x"], z["y"]

    def jpeg(im: np.ndarray, quality: int) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(im[..., 0]).save(buf, "JPEG", quality=quality)
        return np.asarray(Image.open(buf))[..., None]

    def accuracy(images: np.ndarray) -> float:
        t = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.2) / 0.3
        with torch.no_grad():
            return float((model(t).argmax(1).numpy() == y).mean())

    quality = corruptions.DIGITS["jpeg"][2]
    assert res["clean"] == pytest.approx(accuracy(x))
    assert res["corruptions"]["jpeg"][2] == pytest.approx(accuracy(np.stack([jpeg(im, quality) for im in x])))
    accs = [a for v in res["corruptions"].values() for a in v]
    assert res["mean_corruption"] == pytest.approx(np.mean(accs))
    assert res["relative_drop"] == pytest.approx((res["clean"] - res["mean_corruption"]) / res["clean"])


def test_results_are_stored_once_recomputed_for_a_new_suite_and_deleted_with_the_run(store_and_root, monkeypatch):
    store, root = store_and_root
    rid = _finished_run(store, root)
    assert robustness.pending_steps(store, [rid]) == robustness.steps(1)
    first = robustness.for_runs(store, [rid], seed=3)
    path = robustness.path_for(store.dir, rid)
    assert path.is_file() and robustness.key(3) in json.loads(path.read_text())
    assert robustness.pending_steps(store, [rid], seed=3) == 0
    calls = []
    real = robustness.evaluate
    monkeypatch.setattr(robustness, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert robustness.for_runs(store, [rid], seed=3) == first and not calls  # read back, not recomputed
    assert robustness.for_runs(store, [rid], seed=3, compute=False) == first
    monkeypatch.setattr(corruptions, "VERSION", corruptions.VERSION + 1)
    assert robustness.for_runs(store, [rid], seed=3, compute=False) == []
    robustness.for_runs(store, [rid], seed=3)
    assert calls == [1] and len(json.loads(path.read_text())) == 2  # both suite versions kept
    assert store.delete(rid) and not path.exists()


def test_cli_json_shape_progress_and_a_bad_id(store_and_root):
    store, root = store_and_root
    ids = [_finished_run(store, root, seed=s) for s in (0, 1)]
    runs = str(store.dir)
    robustness.for_runs(store, ids[1:])  # one stored, one computed by the command
    p = mscompare_cli("runs", "robustness", *ids, "--runs-dir", runs, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [r["run_id"] for r in out] == ids
    for r in out:
        assert {"run_id", "clean", "mean_corruption", "corruptions"} <= set(r)
        assert list(r["corruptions"]) == list(corruptions.DIGITS)
        assert all(len(v) == 5 and all(0 <= a <= 1 for a in v) for v in r["corruptions"].values())
    p = mscompare_cli("runs", "robustness", ids[0], "--runs-dir", runs)  # stored: the plain table at once
    text = p.stdout
    assert p.returncode == 0
    assert "relative drop" in text and "translate" in text
    p = mscompare_cli("runs", "robustness", ids[0], "nope-123", "--runs-dir", runs)
    err = p.stderr.strip()
    assert p.returncode == 1
    assert len(err.splitlines()) == 1 and "no run 'nope-123'" in err and "Traceback" not in err
    assert mscompare_cli("runs", "robustness", "--runs-dir", runs).returncode == 2


def test_configurations_average_over_seeds(store_and_root):
    store, root = store_and_root
    ids = [_finished_run(store, root, seed=s) for s in (0, 1)] + [_finished_run(store, root, "mobilenet")]
    res = robustness.for_runs(store, ids)
    label = {ids[0]: "alexnet", ids[1]: "alexnet", ids[2]: "mobilenet"}
    curves, table = robustness.by_config(res, label)
    assert list(table["label"]) == ["alexnet", "mobilenet"] and list(table["n"]) == [2, 1]
    assert table.loc[0, "clean"] == pytest.approx((res[0]["clean"] + res[1]["clean"]) / 2)
    assert np.isnan(table.loc[1, "clean_std"])
    c = curves[(curves["label"] == "alexnet") & (curves["corruption"] == "rotate") & (curves["severity"] == 2)]
    v = [res[0]["corruptions"]["rotate"][1], res[1]["corruptions"]["rotate"][1]]
    assert c["mean"].item() == pytest.approx(np.mean(v)) and c["std"].item() == pytest.approx(np.std(v, ddof=1))
    assert len(robustness.chart(curves).data) == 2 * len(corruptions.DIGITS)


def test_runs_page_overlays_configurations_with_their_seed_spread(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import service

    digits_npz(tmp_path / "data", n_train=40, n_test=60)
    store = RunStore(tmp_path / "runs")
    ids = [_finished_run(store, tmp_path / "data", seed=s) for s in (0, 1)]
    monkeypatch.setenv("MSCOMPARE_RUNS_DIR", str(store.dir))
    service.clear()  # the page's Service reads this test's store
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("no robustness results yet" in i.value for i in at.info)
        next(b for b in at.button if b.key == "robust_go").click().run()
        assert not at.exception and not at.warning, [w.value for w in at.warning]
        assert all(robustness.path_for(store.dir, rid).is_file() for rid in ids)
        charts = [str(c.proto.spec) for c in at.get("plotly_chart")]
        assert any("translate" in c and "(n=2)" in c for c in charts)
        table = at.dataframe[-1].value
        assert list(table["seeds"]) == [2] and " ± " in table["mean under corruption %"][0]
    finally:
        service.clear()
