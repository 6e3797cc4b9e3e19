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
from conftest import mscompare_cli


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


run_cli = mscompare_cli


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


def test_the_uncounted_ops_from_fvcores_pass_match_a_separate_trace():
    """profile_model lists fvcore's skipped ops from its own trace; a plain jit trace must find the same."""
    from mscompare.models import ModelConfig, build_model, list_units
    from mscompare.profile import profile_model, skipped_ops

    for model in list_units():
        for units in (1, 3):
            cfg = ModelConfig(model=model, width=16, units=units, in_channels=3, input_size=32)
            traced = skipped_ops(build_model(cfg).eval(), torch.zeros(1, 3, 32, 32))
            assert profile_model(cfg).uncounted_ops == traced and "aten::max_pool2d" in traced, (model, units)


def test_prefetch_profiles_the_neighbouring_slider_positions_in_the_background():
    from conftest import wait_for
    from mscompare import profile
    from mscompare.config import config_for
    from mscompare.models import list_units

    profile.cached_profile.cache_clear()
    profile.prefetch("mnist", 2, 24)
    wait_for(lambda: profile._prefetch["thread"] is None, "the background prefetch to end")
    info = profile.cached_profile.cache_info()
    assert info.currsize == len(list_units()) * 4  # every unit at units 1 and 3 (width 24), widths 32 and 16 (2)
    for units, width in ((1, 24), (3, 24), (2, 32), (2, 16)):
        for m in ("alexnet", "ms_add"):
            profile.cached_profile(config_for(m, "mnist", units=units, width=width))
    assert profile.cached_profile.cache_info().hits >= 8 and profile.cached_profile.cache_info().currsize == info.currsize


def test_a_process_that_exits_while_the_prefetch_profiles_exits_cleanly():
    """The background profiling is a daemon thread: the process must not abort when it ends in the middle of one."""
    code = ("from mscompare import profile\nprofile.prefetch('mnist', 2, 32)\n"
            "while profile.cached_profile.cache_info().currsize < 2:  # exit once it is well into its profiles\n"
            "    profile.wait_for_prefetch(0.01)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-500:]
