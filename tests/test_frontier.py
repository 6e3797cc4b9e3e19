"""The Pareto frontier of accuracy against cost, checked on hand-made points."""
import json

import pandas as pd
import pytest

from mscompare.frontier import frontier_chart, mean_over_seeds, pareto, with_latency
from mscompare.models import ModelConfig
from mscompare.speed import latency_1t_ms


def test_pareto_keeps_only_undominated_points():
    df = pd.DataFrame({"model": list("abcde"), "params": [10, 20, 20, 30, 40],
                       "test_acc": [0.5, 0.7, 0.6, 0.65, 0.9]})
    assert pareto(df, "params")["model"].tolist() == ["a", "b", "e"]  # c and d are beaten by b


def test_mean_over_seeds_and_chart():
    runs = pd.DataFrame({"model": ["a", "a", "b"], "dataset": "mnist", "width": [8, 8, 8], "units": 2,
                         "params": [10, 10, 20], "macs": [1, 1, 3], "test_acc": [0.5, 0.7, 0.8]})
    pts = mean_over_seeds(runs)
    a = pts.set_index("model").loc["a"]
    assert a["seeds"] == 2 and abs(a["test_acc"] - 0.6) < 1e-9
    fig = frontier_chart(pts, "params", "t")
    assert [t.name for t in fig.data][-1] == "Pareto frontier (mnist)" and list(fig.data[-1].x) == [10, 20]


def test_latency_axis_measures_each_configuration_once_on_this_machine():
    small = ModelConfig(model="mobilenet", width=8, units=2).to_dict()
    big = ModelConfig(model="alexnet", width=64, units=3).to_dict()
    runs = pd.DataFrame({"model": ["mobilenet", "mobilenet", "alexnet"], "dataset": "mnist", "width": [8, 8, 64],
                         "units": [2, 2, 3], "params": [1, 1, 2], "macs": [1, 1, 2], "test_acc": [0.5, 0.7, 0.8],
                         "model_config": [json.dumps(small), json.dumps(small), json.dumps(big)]})
    pts = mean_over_seeds(runs)
    calls = []

    def measure(cfg):
        calls.append(cfg.model)
        return latency_1t_ms(cfg)

    out = with_latency(pts, measure)
    assert sorted(calls) == ["alexnet", "mobilenet"]  # the two seeds of mobilenet are one configuration
    lat = out.set_index("model")["latency_ms"]
    assert (lat > 0).all() and lat.notna().all()  # measured, never compared: speed has no place in a test
    fig = frontier_chart(out, "latency_ms", "t")
    assert fig.layout.xaxis.title.text == "batch-1 latency (ms)"


def test_runs_of_two_protocols_are_never_averaged(tmp_path):
    """A 300- and a 60-iteration run of one model are two points, and the better one stays on the frontier."""
    from mscompare.config import config_for, preset
    from mscompare.runs import RunStore

    store = RunStore(tmp_path)
    for iters, acc in ((300, 0.98), (300, 0.97), (60, 0.80)):
        rid = store.create(config_for("mobilenet", "mnist", width=8), preset("quick", "mnist", iters=iters))
        store.update(rid, status="done", test_acc=acc, params=100, macs=10, env={"device": "cpu"})
    pts = mean_over_seeds(store.list(status="done"))
    assert sorted(zip(pts["iters"], pts["seeds"])) == [(60, 1), (300, 2)]
    assert pts.set_index("iters").loc[300, "test_acc"] == pytest.approx(0.975)
    fig = frontier_chart(pts, "params", "t")
    ys = sorted(y for t in fig.data if t.mode == "markers" for y in t.y)
    assert ys == pytest.approx([0.80, 0.975])  # two points, not one mean of 0.917


def test_points_within_the_seed_spread_of_the_frontier_are_marked():
    from mscompare.frontier import mark

    pts = pd.DataFrame({"model": ["a", "b", "c"], "dataset": "mnist", "params": [10, 20, 30],
                        "test_acc": [0.90, 0.80, 0.895], "acc_std": [0.01, 0.002, 0.01], "seeds": [3, 3, 3]})
    places = mark(pts, "params").set_index("model")["place"]
    assert places.to_dict() == {"a": "frontier", "b": "below", "c": "within spread"}
    one_seed = mark(pts.assign(seeds=[3, 3, 1]), "params").set_index("model")["place"]
    assert one_seed["c"] == "spread unknown"


def test_accuracy_axes_zoom_to_the_data_and_never_read_above_100_percent():
    from mscompare.charts import accuracy_range

    lo, hi = accuracy_range(0.99, 1.0, full_scale=False)  # MNIST curves: zoomed, the 100% points just inside
    assert lo == 0.985 and 1.0 < hi <= 1.0005
    lo, hi = accuracy_range(0.40, 0.70, full_scale=False)
    assert (lo, hi) == (pytest.approx(0.385), pytest.approx(0.715))
    assert accuracy_range(0.99, 1.0, full_scale=True) == [0, 1.001]
    assert accuracy_range(float("nan"), float("nan"), full_scale=False) == [0, 1.001]  # nothing to zoom to
