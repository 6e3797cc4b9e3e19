"""Estimated training time (mscompare.estimate) from the speeds of finished runs in a run store with known runs."""
import pytest

from mscompare.config import config_for, preset
from mscompare.estimate import Plan, duration, for_batch, for_sweep, training_time
from mscompare.runs import RunStore


def add_run(store, model, images_per_s, width=32, status="done", dataset="mnist", precision="fp32",
            device="cpu", macs=None):
    rid = store.create(config_for(model, dataset, width=width), preset("quick", dataset, device=device),
                       macs=macs)
    store.update(rid, status=status, images_per_s=images_per_s, env={"precision": precision, "device": device})
    return rid


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs")
    for ips in (1000, 2000, 4000):  # median 2000
        add_run(s, "mobilenet", ips)
    add_run(s, "mobilenet", 100_000, status="cancelled")  # not finished: its speed is not used
    add_run(s, "mobilenet", 100_000, precision="bf16")  # other precision
    add_run(s, "mobilenet", 100_000, dataset="cifar10")  # other data
    add_run(s, "alexnet", 500, width=64, macs=2_000_000)  # only at another width
    return s


def test_the_median_speed_of_finished_runs_at_the_same_settings(store):
    quick = preset("quick", "mnist")
    est = for_batch(store.list(), ["mobilenet"], "mnist", "quick", None, None, 32, "fp32", "cpu", seeds=3)
    assert est.runs == 3 and est.unknown == [] and est.measured_by == 3 and not est.scaled
    assert est.seconds == pytest.approx(3 * quick.iters * quick.batch_size / 2000)
    est = for_batch(store.list(), ["mobilenet"], "mnist", "quick", 1000, None, 32, "fp32", "cpu", seeds=1)
    assert est.seconds == pytest.approx(1000 * 128 / 2000)  # the iterations asked for, not the preset's
    assert for_batch(store.list(), ["mobilenet"], "mnist", "quick", 1000, None, 32, "auto", "cpu",
                     seeds=1).seconds < est.seconds  # auto precision: the bf16 run's speed counts too


def test_other_widths_are_scaled_by_macs_and_unmeasured_models_are_unknown(store):
    est = for_batch(store.list(), ["alexnet", "googlenet"], "mnist", "quick", 100, None, 32, "fp32", "cpu",
                    seeds=1, macs=lambda p, like: 1_000_000)
    assert est.scaled and est.unknown == ["googlenet"] and est.runs == 1
    assert est.seconds == pytest.approx(100 * 128 / (500 * 2_000_000 / 1_000_000))  # half the MACs: twice the speed
    assert for_batch(store.list(), ["alexnet"], "mnist", "quick", 100, None, 32, "fp32", "cpu",
                     seeds=1).seconds > 0  # the MACs of the real model at width 32
    line = est.line()
    assert line.startswith("Estimated training time: about 13 s for alexnet (1 run at the median img/s of 1 finished")
    assert "scaled by MACs" in line and line.endswith("; unknown for googlenet until a run of it has finished here.")


def test_no_finished_run_says_unknown_never_a_guess(tmp_path):
    est = for_batch(RunStore(tmp_path / "empty").list(), ["ms_add"], "mnist", "paper", None, None, 32, "fp32",
                    "cpu", seeds=3)
    assert est.runs == 0 and est.seconds == 0
    assert est.line() == ("Estimated training time: unknown for ms_add until a run of it has finished here (it is "
                          "measured on this machine, never guessed).")


def test_a_cuda_run_does_not_estimate_a_cpu_run(store):
    add_run(store, "googlenet", 50_000, device="cuda")
    assert training_time(store.list(), [Plan("googlenet", "mnist", 1000, 32, 2, "fp32", "cpu")]).unknown == \
        ["googlenet"]
    assert training_time(store.list(), [Plan("googlenet", "mnist", 50_000, 32, 2, "fp32", "cuda")]).seconds == \
        pytest.approx(1.0)


def test_a_sweep_counts_every_trial_it_would_train(store):
    est = for_sweep(store, ["mobilenet"], ["mnist", "cifar10"], [32], [], seeds=2, preset_name="quick", iters=10,
                    device="cpu")
    assert est.runs == 4 and est.skipped == 0 and est.measured_by == 4  # 3 mnist runs, 1 cifar10 run
    assert est.seconds == pytest.approx(2 * 10 * 128 / 2000 + 2 * 10 * 128 / 100_000)
    quick = preset("quick", "mnist")  # the fixture's runs are finished quick-preset trials of seed 0 at width 32
    est = for_sweep(store, ["mobilenet"], ["mnist"], [32], [], seeds=2, preset_name="quick", iters=None, device="cpu")
    assert est.skipped == 1 and est.runs == 1
    assert est.seconds == pytest.approx(quick.iters * quick.batch_size / 2000)
    assert est.line().startswith("1 finished already (skipped). Estimated training time: about 19 s (1 run at")


@pytest.mark.parametrize("s, text", [(0.2, "1 s"), (45, "45 s"), (600, "10 min"), (3 * 3600, "3.0 h")])
def test_durations_read_as_a_person_says_them(s, text):
    assert duration(s) == text
