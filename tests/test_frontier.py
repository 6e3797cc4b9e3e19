"""The Pareto frontier of accuracy against cost, checked on hand-made points."""
import pandas as pd

from mscompare.frontier import frontier_chart, mean_over_seeds, pareto


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
