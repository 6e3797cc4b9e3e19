"""Per-layer forward times: they add up to the whole forward, cover the MACs table's layers, shares and GFLOP/s."""
import json

import pytest

from mscompare import layertime
from mscompare.config import config_for
from mscompare.profile import cached_profile
from conftest import mscompare_cli

BATCHES = (1, 4)  # short passes: on a shared machine a long one is more often cut by another process


@pytest.fixture(scope="module")
def ms_concat():
    cfg = config_for("ms_concat", "mnist", width=16)
    return cfg, layertime.breakdown(cfg, batches=BATCHES, budget_s=0.4)


def test_layer_times_add_up_to_the_whole_forward_timed_without_hooks(ms_concat):
    """Each row is a median over passes with hooks, the whole forward a median over passes without them,
    alternating. On a shared machine another process can cut most passes of one measurement: then measure again,
    up to five times."""
    cfg, df = ms_concat
    for _ in range(5):
        sums = {b: (df[f"ms_b{b}"].sum(), df.attrs["forward_ms"][b]) for b in BATCHES}
        if all(0.8 * whole <= rows <= 1.2 * whole for rows, whole in sums.values()):
            return
        df = layertime.breakdown(cfg, batches=BATCHES, budget_s=0.4, fresh=True)
    pytest.fail(f"rows vs the whole forward, ms, per batch: {sums}")


def test_every_layer_of_the_macs_table_has_a_time_and_own_ops_have_rows(ms_concat):
    cfg, df = ms_concat
    prof = cached_profile(cfg).layers
    leaf_rows = df[df["layer"].isin(prof["layer"])]
    assert list(leaf_rows["layer"]) == list(prof["layer"])  # same names, same order
    assert list(leaf_rows["macs"]) == list(prof["macs"])
    for b in BATCHES:
        assert df[f"ms_b{b}"].notna().all() and (df[f"ms_b{b}"] >= 0).all()
    own = df[df["layer"].str.endswith("(own ops)")]
    assert list(own["layer"]) == [f"units.{i} (own ops)" for i in range(cfg.units)] + ["(own ops)"]
    assert (own["kind"] == "concat + residual add (own ops)").sum() == cfg.units
    # an own-ops row follows the last layer of its unit
    assert df["layer"].tolist().index("units.0 (own ops)") == df["layer"].tolist().index("units.0.act") + 1


def test_shares_sum_to_one_and_gflops_is_two_macs_per_second(ms_concat):
    _, df = ms_concat
    assert df["mac_share"].sum() == pytest.approx(1.0)
    assert (df.loc[~df["type"].isin(["Conv2d", "Linear"]), "mac_share"] == 0).all()  # BN's ops are not MACs
    for b in BATCHES:
        assert df[f"time_share_b{b}"].sum() == pytest.approx(1.0)
        conv = df[df["layer"] == "units.0.expand.0"].iloc[0]
        assert conv[f"gflop_s_b{b}"] == pytest.approx(2 * conv["macs"] * b / (conv[f"ms_b{b}"] / 1e3) / 1e9)
        assert df.loc[df["type"] == "BatchNorm2d", f"gflop_s_b{b}"].isna().all()


def test_layer_kinds_tell_depthwise_from_pointwise(ms_concat):
    _, df = ms_concat
    kinds = df.set_index("layer")["kind"]
    assert kinds["units.0.scale1.0.0"] == "depthwise 3x3 conv" and kinds["units.0.scale1.1.0"] == "pointwise 1x1 conv"
    assert kinds["stem.0.0"] == "3x3 conv" and kinds["stem.0.1"] == "BatchNorm"
    assert kinds["(own ops)"] == "flatten + ReLU (own ops)"
    k = layertime.by_kind(df)
    assert k["mac_share"].sum() == pytest.approx(1.0) and k["time_share_b1"].sum() == pytest.approx(1.0)


def test_measured_once_per_config_and_batch_unless_fresh(ms_concat, monkeypatch):
    cfg, _ = ms_concat
    calls = []
    monkeypatch.setattr(layertime, "measure", lambda *a, **k: calls.append(a) or object())
    layertime.breakdown(cfg, batches=BATCHES, budget_s=0.4)  # both batches from the cache
    assert calls == []
    other = config_for("alexnet", "mnist", width=8)
    first = layertime.cached_measure(other, 2)
    assert layertime.cached_measure(other, 2) is first and len(calls) == 1
    assert layertime.cached_measure(other, 2, fresh=True) is not first and len(calls) == 2
    assert layertime.cached_measure(other, 2) is not first  # the fresh result is kept


def test_google_net_concat_and_a_shared_pool_module_are_timed():
    cfg = config_for("googlenet", "mnist", width=8, units=2)
    lt = layertime.measure(cfg, batch=2, budget_s=0.05)
    t = lt.layers.set_index("layer")
    assert t.loc["units.0 (own ops)", "kind"] == "concat (own ops)"
    assert t.loc["pool", "ms"] > 0  # one module called after each unit: its calls are summed


run_cli = mscompare_cli


def test_info_layers_json():
    p = run_cli("info", "--layers", "mobilenet", "--dataset", "mnist", "--width", "8", "--batch", "1", "2", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["model"] == "mobilenet" and out["batches"] == [1, 2] and out["threads"] == 1
    layers = out["layers"]
    assert {"layer", "kind", "macs", "mac_share", "ms_b1", "time_share_b2", "gflop_s_b2"} <= set(layers[0])
    assert sum(r["time_share_b2"] for r in layers) == pytest.approx(1.0)


@pytest.mark.parametrize("args", [["info", "--layers", "resnet"], ["info", "--layers", "alexnet", "--batch", "0"]])
def test_info_layers_bad_argument_is_one_line(args):
    p = mscompare_cli(*args)
    assert p.returncode == 2 and len([ln for ln in p.stderr.splitlines() if "error" in ln]) == 1, p.stderr
