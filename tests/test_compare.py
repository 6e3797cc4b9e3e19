"""Seeds, predictions, the paired statistics, grouping by configuration, `compare` and the HTML report."""
import json
import re

import numpy as np
import pytest

from conftest import mscompare_cli
from mscompare import stats
from mscompare.groups import CompareError, compare, group
from mscompare.predictions import Predictions, path_for, save
from mscompare.runs import RunStore


def test_mcnemar_exact_by_hand():
    # 2 images only A gets right, 8 only B: p = 2 * P(Binomial(10, 1/2) <= 2) = 2 * (1 + 10 + 45) / 1024
    a = np.array([1, 1] + [0] * 8 + [1] * 5 + [0] * 3, bool)
    b = np.array([0, 0] + [1] * 8 + [1] * 5 + [0] * 3, bool)
    assert stats.mcnemar_exact(a, b) == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact(a, a) == 1.0


def test_paired_bootstrap_ci_covers_a_known_difference():
    rng = np.random.default_rng(1)
    n = 4000
    b = rng.random(n) < 0.70
    a = b.copy()
    flip = rng.choice(np.flatnonzero(~b), size=n // 10, replace=False)  # A is right on 400 more images
    a[flip] = True
    lo, hi = stats.paired_bootstrap_ci(a, b)
    assert lo < 0.1 < hi and lo > 0.08
    assert stats.verdict((lo, hi)) == "a better"
    assert stats.verdict(stats.paired_bootstrap_ci(b, a)) == "b better"
    assert stats.paired_bootstrap_ci(a, a) == (0.0, 0.0)


def test_seeds_and_images_ci_widens_with_seed_spread():
    rng = np.random.default_rng(2)
    base = rng.random(3000) < 0.7
    same = np.stack([base, base])
    assert stats.seeds_and_images_ci(same, same) == (0.0, 0.0)
    # the A seeds disagree with each other by 5 points: the CI must cover both seeds' differences
    a = np.stack([base | (rng.random(3000) < 0.02), base | (rng.random(3000) < 0.2)])
    lo, hi = stats.seeds_and_images_ci(a, np.stack([base, base]))
    only_images = stats.paired_bootstrap_ci(a.mean(0) > 0.5, base)
    assert hi - lo > only_images[1] - only_images[0]
    assert lo > 0  # both seeds of A are right on a superset of B's images


def test_ece_by_hand():
    cal = stats.calibration(np.array([0.95, 0.95, 0.65, 0.65]), np.array([1, 0, 1, 1]))
    # bin 14: accuracy 0.5, confidence 0.95; bin 9: accuracy 1, confidence 0.65
    assert cal["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    assert cal["count"][14] == 2 and cal["count"][9] == 2 and sum(cal["count"]) == 4
    assert stats.calibration(np.array([1.0]), np.array([1]))["count"][14] == 1  # 1.0 falls in the top bin


def test_sentences_say_what_is_known():
    s = stats.sentence("ms_add", "mobilenet", 0.012, (0.004, 0.02), 3, 3, 10000)
    assert s == "ms_add is better than mobilenet by 1.20 points (95% CI 0.40 to 2.00; 3 seeds each)."
    s = stats.sentence("a", "b", 0.001, (-0.003, 0.005), 2, 2, 10000)
    assert s.startswith("a and b are not distinguishable with 2 seeds each and 10,000 test images")
    assert "spread is unknown" in stats.sentence("a", "b", 0.05, (0.04, 0.06), 1, 1, 100)


def _fake_run(store, model, seed, correct, dataset="mnist", true=None, iters=100):
    from mscompare.config import config_for, preset

    rid = store.create(config_for(model, dataset, width=8), preset("quick", dataset, seed=seed, iters=iters))
    true = np.zeros(len(correct), int) if true is None else true
    store.update(rid, status="done", test_acc=float(np.mean(correct)), env={"device": "cpu", "precision": "fp32"})
    save(path_for(store.dir, rid), Predictions(np.where(correct, true, 1), np.full(len(correct), 0.9), true))
    return rid


def test_group_keeps_protocols_apart_and_compare_refuses_other_test_sets(tmp_path):
    store = RunStore(tmp_path)
    a = [_fake_run(store, "ms_add", s, np.arange(100) < 80 + s) for s in range(3)]
    b = [_fake_run(store, "mobilenet", s, np.arange(100) < 70) for s in range(2)]
    other_protocol = _fake_run(store, "ms_add", 0, np.arange(100) < 10, iters=60)
    g = group(store.list())
    assert len(g) == 3
    ms = g[(g["model"] == "ms_add") & (g["iters"] == 100)].iloc[0]
    assert ms["n"] == 3 and ms["mean"] == pytest.approx(0.81) and ms["std"] == pytest.approx(0.01)
    assert (ms["min"], ms["max"], ms["seeds"]) == (0.80, 0.82, [0, 1, 2])
    assert g[g["iters"] == 60].iloc[0]["n"] == 1 and other_protocol in g[g["iters"] == 60].iloc[0]["runs"]
    res = compare(store, a, b)
    assert res["verdict"] == "a better" and res["diff"] == pytest.approx(11.0)
    assert res["a"]["n"] == 3 and res["b"]["n"] == 2 and len(res["p_mcnemar"]) == 6
    shifted = _fake_run(store, "alexnet", 0, np.arange(100) < 70, true=np.ones(100, int))
    with pytest.raises(CompareError, match="different test sets"):
        compare(store, a, [shifted])
    fewer = _fake_run(store, "alexnet", 1, np.arange(50) < 40)
    with pytest.raises(CompareError, match="different test sets"):
        compare(store, [fewer], b)
    other_ds = _fake_run(store, "alexnet", 0, np.arange(100) < 70, dataset="cifar10")
    with pytest.raises(CompareError, match="different datasets"):
        compare(store, [other_ds], b)


def test_train_seeds_compare_report_and_delete_from_the_cli(tiny_npz, tmp_path):
    runs = str(tmp_path / "runs")
    common = ["--dataset", "tinydigits", "--data-root", str(tiny_npz), "--runs-dir", runs, "--width", "8",
              "--iters", "30", "--eval-every", "10", "--batch-size", "32", "--seeds", "2", "--json",
              "--device", "cpu", "--no-fuse"]
    ids = {}
    for model in ("mobilenet", "alexnet"):
        p = mscompare_cli("train", "--model", model, *common)
        assert p.returncode == 0, p.stderr
        lines = [json.loads(x) for x in p.stdout.splitlines() if '"batch"' in x]
        assert [x["seed"] for x in lines] == [0, 1] and len({x["batch"] for x in lines}) == 1
        ids[model] = [x["run_id"] for x in lines]
    store = RunStore(runs)
    for rid in ids["mobilenet"] + ids["alexnet"]:
        p = np.load(path_for(runs, rid))
        assert len(p["pred"]) == len(p["true"]) == len(p["prob"]) == 200
        assert np.mean(p["pred"] == p["true"]) == pytest.approx(store.get(rid)["test_acc"])
    p = mscompare_cli("compare", "--a", *ids["mobilenet"], "--b", *ids["alexnet"], "--runs-dir", runs, "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert {"a", "b", "diff", "ci", "p_mcnemar", "verdict"} <= set(res)
    assert {"n", "mean", "std", "runs"} <= set(res["a"]) and res["a"]["n"] == 2
    assert res["ci"][0] <= res["diff"] <= res["ci"][1] and len(res["p_mcnemar"]) == 2
    assert res["verdict"] in ("a better", "b better", "not distinguishable")
    p = mscompare_cli("runs", "show", ids["alexnet"][0], "--runs-dir", runs, "--json")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["classes"] == ["tl", "tr", "bl", "br"] and 0 <= shown["ece"] <= 1
    out = tmp_path / "report.html"
    assert mscompare_cli("report", "--runs", *ids["mobilenet"], *ids["alexnet"], "--runs-dir", runs, "--out",
                         out).returncode == 0
    page = out.read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "<script></script>", page, flags=re.S)  # plotly.js inlined
    assert not re.search(r"""<(script|link|img|iframe)[^>]*(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert markup.count("<script") == page.count("<script") and "<script src" not in page
    assert "not distinguishable" in page or "is better than" in page
    assert "python -m mscompare train --model mobilenet" in page and "--seed 0 --seeds 2" in page
    assert mscompare_cli("runs", "delete", ids["alexnet"][0], "--runs-dir", runs).returncode == 0
    assert not path_for(runs, ids["alexnet"][0]).exists() and store.get(ids["alexnet"][0]) is None
    p = mscompare_cli("compare", "--a", ids["alexnet"][0], "--b", ids["mobilenet"][0], "--runs-dir", runs)
    assert p.returncode == 1 and "no run" in p.stderr


def test_a_run_trained_anywhere_is_in_the_one_default_store(tiny_npz, tmp_path, monkeypatch):
    """No --runs-dir: `train` from one folder and `runs list` from another see the same store."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("MSCOMPARE_RUNS_DIR", None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train = subprocess.run([sys.executable, "-m", "mscompare", "train", "--model", "mobilenet", "--dataset",
                            "tinydigits", "--data-root", str(tiny_npz), "--width", "8", "--iters", "5", "--json",
                            "--batch-size", "32", "--device", "cpu"], cwd=tmp_path / "a", env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    rid = json.loads(train.stdout.splitlines()[-1])["run_id"]
    listed = subprocess.run([sys.executable, "-m", "mscompare", "runs", "list"], cwd=tmp_path / "b", env=env,
                            capture_output=True, text=True, timeout=300)
    assert rid in listed.stdout
    assert (tmp_path / "xdg" / "mscompare" / "runs" / "runs.sqlite").is_file()
    assert not (tmp_path / "a" / "runs").exists()


def test_swapping_the_sides_mirrors_the_ci():
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 500)) < 0.8, rng.random((3, 500)) < 0.7
    lo, hi = stats.seeds_and_images_ci(a, b)
    assert stats.seeds_and_images_ci(b, a) == (-hi, -lo)


def test_one_run_label_and_the_best_run_per_model(tmp_path):
    from mscompare.groups import best_per_model, run_labels

    store = RunStore(tmp_path)
    weak = _fake_run(store, "ms_add", 0, np.arange(100) < 60)
    strong = _fake_run(store, "ms_add", 1, np.arange(100) < 90)
    mob = _fake_run(store, "mobilenet", 0, np.arange(100) < 70)
    store.update(weak, env={"device": "cpu", "precision": "bf16"})
    labels = run_labels(store.list())
    assert labels[strong] == f"ms_add · mnist · quick 100 it · w8 · 2 units · seed 1 · 90.00% · {strong[-6:]}"
    assert labels[weak].startswith("ms_add · mnist · quick 100 it · w8 · 2 units · bf16 · seed 0 · 60.00%")
    assert best_per_model(store.list()) == sorted([strong, mob], key=lambda r: store.get(r)["model"])
