"""A run's typed messages and its one path through the store: create -> start -> record -> end."""
import json

import pytest

from mscompare import lifecycle
from mscompare.config import TrainConfig
from mscompare.events import Progress, RunEnd, RunResult
from mscompare.models import ModelConfig, build_model, count_params
from mscompare.runs import RunStore
from mscompare.train import Cancelled, TrainingError

SMALL = ModelConfig(model="mobilenet", width=8, units=2, num_classes=4)


def test_messages_cross_a_pipe_as_json_unchanged():
    step, point = Progress(10, 100, 1.25, 800.0, 2.0, 18.0), Progress(20, 100, 1.1, 790.0, 4.0, 16.0, test_acc=0.5)
    assert not step.is_eval and point.is_eval
    for p in (step, point):
        assert Progress.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    done = RunEnd("r1", "done", result=RunResult(0.91, 12.5, 800.0, {"device": "cpu"}, {"accuracy": 0.91}, "/c"))
    for e in (done, RunEnd("r2", "failed", "out of memory")):
        assert RunEnd.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    with pytest.raises(ValueError, match="done has a result"):
        RunEnd("r3", "done")
    with pytest.raises(ValueError, match="ends as one of"):
        RunEnd("r3", "running")


def test_outcome_names_how_a_run_ended():
    res = RunResult(0.9, 1.0, 100.0)
    assert lifecycle.outcome("a", res) == RunEnd("a", "done", result=res)
    assert lifecycle.outcome("a", Cancelled()) == RunEnd("a", "cancelled", "cancelled by the user")
    failed = lifecycle.outcome("a", TrainingError("the loss became nan at iteration 7\nmore"))
    assert (failed.status, failed.message) == ("failed", "the loss became nan at iteration 7")
    assert lifecycle.outcome("a", KeyError("x")).message == "KeyError: 'x'"


def test_one_path_through_the_store(tmp_path):
    store = RunStore(tmp_path / "runs")
    rid = lifecycle.create(store, SMALL, TrainConfig(dataset="mnist", iters=20), tag="t", batch="b")
    row = store.get(rid)
    assert row["status"] == "queued" and row["params"] == count_params(build_model(SMALL)) and row["batch"] == "b"
    lifecycle.start(store, rid)
    assert store.get(rid)["status"] == "running"
    lifecycle.record(store, rid, Progress(10, 20, 1.0, 50.0, 1.0, 1.0))  # a step: live only
    lifecycle.record(store, rid, Progress(20, 20, 0.9, 50.0, 2.0, 0.0, test_acc=0.75))
    assert [(p["iter"], p["test_acc"]) for p in store.curve(rid)] == [(20, 0.75)]
    res = RunResult(0.8, 2.0, 50.0, {"device": "cpu"}, {"accuracy": 0.8}, str(tmp_path / "c.safetensors"),
                    "skipped 1 bad file(s)")
    lifecycle.end(store, RunEnd(rid, "done", result=res))
    row = store.get(rid)
    assert (row["status"], row["test_acc"], row["message"]) == ("done", 0.8, "skipped 1 bad file(s)")
    assert json.loads(row["env"]) == {"device": "cpu"} and row["checkpoint"] == res.checkpoint
    lifecycle.end(store, RunEnd(rid, "cancelled", "too late"), only_active=True)  # it has ended: kept as it was
    assert store.get(rid)["status"] == "done"
