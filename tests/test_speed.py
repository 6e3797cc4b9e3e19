"""Speed measurement: rows and keys for every model, real training steps, threads and RNG left as found."""
import math

import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from mscompare.config import config_for
from mscompare.models import build_model, list_units
from mscompare.speed import (SPEED_COLUMNS, inference_latency_ms, measure, measure_all, torch_threads,
                             training_images_per_s)


def positive(v):
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_measure_all_gives_one_row_per_model_with_every_column():
    df = measure_all("mnist", units=1, width=8, batch=16, budget_s=0.05)
    assert list(df["model"]) == list_units()
    assert list(df.columns) == ["model", "units", *SPEED_COLUMNS]
    assert (df["units"] == 1).all()
    for col in ("latency_1t_ms", "latency_ms", "train_img_s"):
        assert all(positive(float(v)) for v in df[col]), df[col]
    assert (df["threads"] == torch.get_num_threads()).all()


def test_paper_unit_counts_when_units_is_none():
    df = measure_all("cifar10", units=None, width=8, batch=8, budget_s=0.02, models=["googlenet", "ms_add"])
    assert dict(zip(df["model"], df["units"])) == {"googlenet": 2, "ms_add": 3}


def test_training_speed_trains_the_model():
    cfg = config_for("ms_add", "mnist", units=1, width=8)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ips = training_images_per_s(model, cfg, batch=16, steps=2, warmup=1, budget_s=0.05)
    assert positive(ips)
    after = model.state_dict()
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    changed = [k for k in weights if not torch.equal(before[k], after[k])]
    assert len(changed) == len(weights), set(weights) - set(changed)  # Adam moved every parameter
    assert not torch.equal(before["units.0.norm.running_mean"], after["units.0.norm.running_mean"])  # train mode
    assert int(after["stem.0.1.num_batches_tracked"]) >= 2  # warm-up + at least one timed step


def test_latency_leaves_the_model_and_the_thread_count_as_they_were():
    cfg = config_for("googlenet", "mnist", units=1, width=8)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    x = torch.zeros(1, 1, 28, 28)
    for n in (1, None):
        assert positive(inference_latency_ms(model, x, threads=n, warmup=1, reps=3, budget_s=0.01))
        assert torch.get_num_threads() == threads
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torch_threads_sets_and_restores():
    old = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == old
    with torch_threads(None) as n:
        assert n == old


def test_measure_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    row = measure(config_for("alexnet", "mnist", units=1, width=8), batch=8, budget_s=0.02)
    assert torch.equal(torch.rand(3), expected)
    assert set(row) == set(SPEED_COLUMNS)


def test_architectures_page_measures_speed_behind_the_toggle(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/architectures.py").run()
    assert "latency_1t_ms" not in at.dataframe[0].value.columns  # nothing measured until asked
    at.slider[0].set_value(1)
    at.slider[1].set_value(8).run()
    at.toggle(key="arch_speed").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("model")
    assert list(table.index) == list_units()
    for col in ("latency_1t_ms", "train_img_s"):
        assert (table[col] > 0).all(), table[col]
    assert "latency_ms" not in table.columns  # one latency column, at one stated thread count
    assert {"params", "macs", "accuracy"} <= set(table.columns)
