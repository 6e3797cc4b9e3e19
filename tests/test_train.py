"""Training, the run store (interrupted runs, recovery), checkpoints and the train/runs CLI."""
import json
import subprocess
import sys

import pytest
import torch

from mscompare import ModelConfig, build_model
from mscompare.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from mscompare.data import load_dataset
from mscompare.jobs import execute
from mscompare.runs import RunStore
from mscompare.train import TrainConfig, preset, train
from conftest import mscompare_cli

SMALL = dict(model="mobilenet", width=8, units=2, num_classes=4)


def test_training_learns_the_tiny_task(tiny_npz):
    tr, te = load_dataset("tinydigits", tiny_npz)
    seen = []
    cfg = TrainConfig(dataset="tinydigits", iters=60, batch_size=32, eval_every=20, lr=3e-3, eval_subset=0,
                      device="cpu")
    res = train(ModelConfig(**SMALL), cfg, tr, te, progress=seen.append)
    assert [s.iter for s in seen if s.is_eval] == [20, 40, 60] and all(0 <= s.test_acc <= 1 for s in seen if s.is_eval)
    assert [s.iter for s in seen if not s.is_eval] == [10, 20, 30, 40, 50, 60]
    assert res["test_acc"] > 0.9, res["curve"]
    assert res["curve"][-1][0] == 60 and res["images_per_s"] > 0
    assert {"mean", "std"} == set(res["norm"]) and res["env"]["device"] == "cpu"


def test_seeded_runs_repeat(tiny_npz):
    tr, te = load_dataset("tinydigits", tiny_npz)
    cfg = TrainConfig(dataset="tinydigits", iters=10, batch_size=16, eval_every=10, seed=3, device="cpu")
    a = train(ModelConfig(**SMALL), cfg, tr, te)
    b = train(ModelConfig(**SMALL), cfg, tr, te)
    assert a["curve"] == b["curve"]
    for p, q in zip(a["model"].parameters(), b["model"].parameters()):
        assert torch.equal(p, q)


def test_presets_follow_the_paper():
    p = preset("paper", "svhn")
    assert (p.batch_size, p.iters, p.eval_every) == (128, 10000, 100)
    t = preset("paper", "tiny-imagenet")
    assert (t.iters, t.eval_every) == (42000, 3000)
    assert preset("paper", "mnist").iters == preset("paper", "cifar10").iters == 5000
    assert preset("quick", "mnist").iters < 1000
    m = preset("modern", "cifar10")
    assert m.iters == 5000 and m.schedule == "onecycle" and m.augment and m.label_smoothing > 0
    with pytest.raises(ValueError):
        preset("fast", "mnist")


def test_checkpoint_round_trip_and_no_pickle(tmp_path):
    cfg = ModelConfig(model="ms_add", width=16, units=2)
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, cfg, {"classes": list("0123456789")})
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    loaded, cfg2, meta = load_checkpoint(path)
    assert cfg2 == cfg and meta["classes"][3] == "3"
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(model(x), loaded(x))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_store_records_run_and_checkpoint(tmp_path, tiny_npz):
    store = RunStore(tmp_path / "runs")
    tcfg = TrainConfig(dataset="tinydigits", data_root=str(tiny_npz), iters=20, batch_size=32, eval_every=10)
    rid = store.create(ModelConfig(**SMALL), tcfg)
    row = execute(store, rid, tmp_path / "ck")
    assert row["status"] == "done", row["message"]
    assert [p["iter"] for p in store.curve(rid)] == [10, 20]
    assert row["params"] == sum(p.numel() for p in build_model(ModelConfig(**SMALL)).parameters())
    model, cfg, meta = load_checkpoint(row["checkpoint"])
    assert cfg == ModelConfig(**SMALL) and meta["classes"] == ["tl", "tr", "bl", "br"]
    assert json.loads(row["env"])["torch"] == torch.__version__


def test_recovery_after_crash_keeps_the_curve(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create(ModelConfig(**SMALL), TrainConfig())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.update(rid, status="running", pid=dead.pid, owner=f"{dead.pid}:?")
    store.add_point(rid, 100, 0.5, 1.2, 1000.0)
    store.add_point(rid, 200, 0.7, 0.9, 1000.0)
    reopened = RunStore(tmp_path)  # what the app or CLI does at start
    row = reopened.get(rid)
    assert row["status"] == "interrupted"
    assert [p["test_acc"] for p in reopened.curve(rid)] == [0.5, 0.7]


cli = mscompare_cli


def test_train_cli_json_and_runs_commands(tmp_path, tiny_npz):
    runs = str(tmp_path / "runs")
    p = cli("train", "--model", "alexnet", "--dataset", "tinydigits", "--data-root", str(tiny_npz), "--iters",
            "30", "--eval-every", "10", "--batch-size", "32", "--width", "8", "--runs-dir", runs, "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [ln["iter"] for ln in lines[:-1]] == [10, 20, 30]
    final = lines[-1]
    assert {"model", "dataset", "iters", "test_acc", "params", "seconds", "images_per_s", "run_id"} <= set(final)
    assert 0 <= final["test_acc"] <= 1 and final["iters"] == 30
    show = cli("runs", "show", final["run_id"], "--runs-dir", runs, "--json")
    rec = json.loads(show.stdout)
    assert rec["status"] == "done" and sum(map(sum, rec["confusion"])) == 200  # the whole test set
    assert len(rec["per_class"]) == 4 and abs(sum(rec["confusion"][i][i] for i in range(4)) / 200 - rec["test_acc"]) < 1e-9
    text = cli("runs", "show", final["run_id"], "--runs-dir", runs).stdout
    assert "per-class accuracy" in text and "confusion matrix" in text and " tl " in text.replace("\n", " ")
    csv = tmp_path / "runs.csv"
    assert cli("runs", "export", "--csv", str(csv), "--runs-dir", runs).returncode == 0
    assert final["run_id"] in csv.read_text()


def test_train_cli_missing_dataset_is_one_clear_line(tmp_path):
    p = cli("train", "--model", "alexnet", "--dataset", "nothere", "--data-root", str(tmp_path), "--json",
            "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 1 and "Traceback" not in p.stderr and "nothere" in p.stderr
    bad = cli("train", "--model", "vgg", "--dataset", "mnist")
    assert bad.returncode == 2


def test_service_curves_label_only_the_runs_asked_for(tmp_path):
    from mscompare.service import Service

    svc = Service(tmp_path)
    a = svc.store.create(ModelConfig(**SMALL), TrainConfig(seed=4))
    b = svc.store.create(ModelConfig(**{**SMALL, "model": "alexnet"}), TrainConfig())
    for rid, acc in ((a, 0.5), (b, 0.6)):
        svc.store.add_point(rid, 100, acc, 1.0, 10.0)
    df = svc.curves([b])
    assert df["run_id"].tolist() == [b] and df["test_acc"].tolist() == [0.6]
    assert df["label"].tolist() == [f"alexnet · mnist · paper 5,000 it · w8 · 2 units · seed 0 · {b[-6:]}"]
    assert svc.curves([a, a])["label"].str.startswith("mobilenet · mnist · paper 5,000 it · w8 · 2 units · seed 4 · ").all()


def test_precision_resolution(monkeypatch):
    from mscompare import train as tr

    cpu = torch.device("cpu")
    cfg = ModelConfig(**SMALL)
    model = build_model(cfg)
    assert tr.resolve_precision("fp32", model, cfg, 8, cpu) == ("fp32", {})
    assert tr.resolve_precision("bf16", model, cfg, 8, cpu) == ("bf16", {})
    monkeypatch.setattr(tr, "BF16_AUTO_DEVICES", ())
    assert tr.resolve_precision("auto", model, cfg, 8, cpu) == ("fp32", {})  # no probe where bf16 isn't allowed
    monkeypatch.setattr(tr, "BF16_AUTO_DEVICES", ("cpu",))
    monkeypatch.setattr(tr, "step_times", lambda m, x, y: {"fp32": 0.010, "bf16": 0.006})
    assert tr.resolve_precision("auto", model, cfg, 8, cpu) == ("bf16", {"fp32_step_ms": 10.0, "bf16_step_ms": 6.0})
    monkeypatch.setattr(tr, "step_times", lambda m, x, y: {"fp32": 0.010, "bf16": 0.009})  # under the 0.8 margin
    assert tr.resolve_precision("auto", model, cfg, 8, cpu)[0] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


def test_the_bf16_probe_times_real_steps_and_leaves_the_model_alone():
    from mscompare.train import step_times

    cfg = ModelConfig(**SMALL)
    model = build_model(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats included
    x, y = torch.randn(16, 1, 28, 28), torch.randint(4, (16,))
    rng = torch.get_rng_state()
    t = step_times(model, x, y, steps=2)
    assert set(t) == {"fp32", "bf16"} and all(0 < v < 10 for v in t.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)


def test_auto_precision_records_the_probe_in_the_run(tiny_npz, monkeypatch):
    from mscompare import train as tr

    monkeypatch.setattr(tr, "BF16_AUTO_DEVICES", ("cpu",))
    tr_, te = load_dataset("tinydigits", tiny_npz)
    cfg = TrainConfig(dataset="tinydigits", iters=5, batch_size=32, eval_every=5, device="cpu", precision="auto")
    env = train(ModelConfig(**SMALL), cfg, tr_, te)["env"]
    assert env["precision"] in ("fp32", "bf16") and env["fp32_step_ms"] > 0 and env["bf16_step_ms"] > 0
    assert (env["precision"] == "bf16") == (env["bf16_step_ms"] < 0.8 * env["fp32_step_ms"])


def test_bf16_training_runs_and_is_recorded(tiny_npz):
    tr_, te = load_dataset("tinydigits", tiny_npz)
    cfg = TrainConfig(dataset="tinydigits", iters=20, batch_size=32, eval_every=20, device="cpu", precision="bf16")
    res = train(ModelConfig(**SMALL), cfg, tr_, te)
    assert res["env"]["precision"] == "bf16" and 0 <= res["test_acc"] <= 1


def test_confusion_summary_by_hand():
    from mscompare.train import confusion_summary

    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 1, 1, 1, 0, 2])
    conf = torch.tensor([0.9, 0.8, 0.6, 0.7, 0.95, 0.5])
    s = confusion_summary(y, p, conf, 3)
    assert s["confusion"] == [[1, 2, 0], [1, 1, 0], [0, 0, 1]] and sum(map(sum, s["confusion"])) == 6
    assert s["per_class"] == [1 / 3, 1 / 2, 1.0] and abs(s["accuracy"] - 0.5) < 1e-9
    assert s["confused_pairs"][0] == {"true": 0, "pred": 1, "count": 2}
    assert [m["index"] for m in s["misclassified"]] == [4, 1, 2]  # most confident mistakes first
