"""The Pareto frontier of accuracy against cost, checked on hand-made points."""
import json

import pandas as pd

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
    assert (lat > 0).all() and lat["alexnet"] > lat["mobilenet"]  # 64 wide standard convs vs 8 wide separable
    fig = frontier_chart(out, "latency_ms", "t")
    assert fig.layout.xaxis.title.text == "batch-1 latency (ms)"
