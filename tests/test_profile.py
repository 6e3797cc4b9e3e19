"""fvcore profiling: MACs cross-checked against torch's FlopCounterMode; the info CLI and its errors."""
import json
import logging
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mscompare import MODELS, build_model, config_for
from mscompare.profile import compare, profile_model


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fvcore_conv_linear_macs_match_flopcountermode(model):
    from fvcore.nn import FlopCountAnalysis

    cfg = config_for(model, "cifar10")
    net = build_model(cfg).eval()
    x = torch.zeros(1, 3, 32, 32)
    fca = FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = fca.by_operator()
    fv = by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0)
    with FlopCounterMode(display=False) as fcm:
        net(x)
    assert fv == fcm.get_total_flops() // 2
    assert fv > 0 and profile_model(cfg).macs == fv  # the reported MACs are conv + linear only


def test_profile_lists_uncounted_ops_without_warning(caplog):
    with caplog.at_level(logging.WARNING):
        p = profile_model(config_for("ms_add", "mnist"))
        q = profile_model(config_for("ms_concat", "mnist"))
    assert {"aten::add", "aten::max_pool2d"} <= set(p.uncounted_ops)
    assert {"aten::relu", "aten::relu_"} & set(p.uncounted_ops) and "aten::cat" in q.uncounted_ops
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert p.layers["params"].sum() == p.params
    conv_fc = p.layers[p.layers["type"].isin(["Conv2d", "Linear"])]["macs"].sum()
    bn = p.layers[p.layers["type"] == "BatchNorm2d"]["macs"].sum()
    assert conv_fc == p.macs and bn == p.other_macs["batch_norm"] > 0
    assert p.layers["macs"].sum() == p.macs + bn
    assert {"layer", "type", "params", "macs"} <= set(p.layers.columns)


def test_table2_ratios_at_default_config():
    df = compare("cifar10").set_index("model")
    r = df["unit_ratio"]
    assert 10 <= r["googlenet"] <= 16
    assert 5 <= r["alexnet"] <= 9
    assert 1.5 <= r["ms_concat"] <= 3 and 1.5 <= r["ms_add"] <= 3
    assert df.loc["googlenet", "units"] == 2 and df.loc["alexnet", "units"] == 3


def test_width_and_units_change_the_table():
    a, b = compare("mnist", units=2, width=16), compare("mnist", units=2, width=32)
    assert (b["params"] > a["params"]).all() and (b["macs"] > a["macs"]).all()
    c = compare("mnist", units=4, width=16)
    assert (c["units"] == 4).all() and (c["unit_params"] == a["unit_params"]).all()
    assert (c["params"] != a["params"]).all()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mscompare", *args], capture_output=True, text=True, timeout=120)


def test_info_json_lists_all_models():
    p = run_cli("info", "--json", "--dataset", "cifar10")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["model"] for r in rows} == set(MODELS)
    for r in rows:
        assert {"model", "params", "unit_params", "macs"} <= set(r) and r["macs"] > 0


@pytest.mark.parametrize("args", [["info", "--units", "9"], ["info", "--dataset", "imagenet"],
                                  ["info", "--width", "12"], ["info", "--width", "-3"]])
def test_info_bad_argument_exits_2_with_one_line(args):
    p = run_cli(*args)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1


def test_skipped_ops_do_not_depend_on_the_width():
    from mscompare.models import ModelConfig, build_model
    from mscompare.profile import skipped_ops, skipped_ops_of

    for model in ("ms_add", "googlenet"):
        cfg = ModelConfig(model=model, width=48, in_channels=3, input_size=32)
        traced = skipped_ops(build_model(cfg).eval(), torch.zeros(1, 3, 32, 32))
        assert skipped_ops_of(cfg) == traced and "aten::max_pool2d" in traced
