"""Model library: every registered model builds, runs and trains; parameter counts match hand computation."""
import itertools

import pytest
import torch

from mscompare import MODELS, ModelConfig, build_model, count_params, unit_params
from mscompare.models import list_units

EXPECTED = {"alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"}


def test_registry_has_the_papers_five_units():
    assert EXPECTED <= set(MODELS)  # a sixth registered unit needs no change here


@pytest.mark.parametrize("model", list_units())
def test_sweep_shapes_and_gradients(model):
    for ch, size, units in itertools.product((1, 3), (28, 32, 64), (1, 2, 3, 4)):
        cfg = ModelConfig(model=model, units=units, width=16, in_channels=ch, input_size=size,
                          num_classes=200 if size == 64 else 10)
        net = build_model(cfg)
        out = net(torch.randn(2, ch, size, size))
        assert out.shape == (2, cfg.num_classes), (cfg, out.shape)
        assert torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, (cfg, missing)


# One unit at width 8, by hand (BatchNorm = 2 params per channel, convs have no bias):
#   alexnet   3x3 conv 8->8: 9*8*8 + BN 16                                            = 592
#   mobilenet dw 9*8 + BN 16 + pw 8*8 + BN 16                                          = 168
#   googlenet branches of 2 maps, 1x1 paths widened to 12:
#             1x1: 8*2+4=20; 3x3: 8*12+24 + 9*12*2+4 = 340; 5x5: 8*12+24 + 25*12*2+4 = 724; pool: 8*2+4 = 20 -> 1104
#   ms_concat expand 8*8+16 = 80; scale1 SepConv(8->4): 72+16+32+8 = 128;
#             scale2 SepConv(8->4) 128 + SepConv(4->4): 36+8+16+8 = 68; residual BN 16  = 420
#   ms_add    ms_concat + restore 1x1 4->8 + BN: 32+16                                 = 468
HAND = {"alexnet": 592, "mobilenet": 168, "googlenet": 1104, "ms_concat": 420, "ms_add": 468}


@pytest.mark.parametrize("model", sorted(HAND))
def test_unit_params_by_hand(model):
    assert unit_params(ModelConfig(model=model, width=8)) == HAND[model]


def test_whole_network_params_by_hand():
    # mobilenet, width 8, 2 units, 28x28x1: stem 9*8 + 16 = 88; units 2*168; 28 -> 14 -> 7 -> 4 (ceil) ->
    # fc1 8*4*4*128 + 128 = 16512; fc2 128*10 + 10 = 1290.
    cfg = ModelConfig(model="mobilenet", width=8, units=2)
    assert count_params(build_model(cfg)) == 88 + 2 * 168 + 16512 + 1290


def test_merge_methods_differ_as_the_paper_says():
    """Method 1 concatenates the two scales (2 x m maps), method 2 adds them (m maps)."""
    cat_unit, add_unit = MODELS["ms_concat"](ModelConfig(width=16)), MODELS["ms_add"](ModelConfig(width=16))
    x = torch.randn(1, 16, 8, 8)
    e = cat_unit.expand(x)
    assert torch.cat([cat_unit.scale1(e), cat_unit.scale2(e)], 1).shape[1] == 16
    e = add_unit.expand(x)
    assert (add_unit.scale1(e) + add_unit.scale2(e)).shape[1] == 8
    assert cat_unit(x).shape == add_unit(x).shape == x.shape  # residual keeps the unit's width


@pytest.mark.parametrize("bad", [dict(model="no-such-unit"), dict(units=0), dict(units=5), dict(width=12),
                                 dict(in_channels=2), dict(input_size=4), dict(num_classes=1)])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_config_round_trip_rebuilds_identical_model():
    cfg = ModelConfig(model="ms_add", units=3, width=24, in_channels=3, input_size=32, num_classes=10)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    a, b = build_model(cfg), build_model(again)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


def test_register_unit_rejects_a_duplicate_name():
    from mscompare.models import get_unit, list_units, register_unit

    with pytest.raises(ValueError, match="already registered"):
        register_unit("alexnet")(lambda cfg: None)
    assert list_units()[:5] == ["alexnet", "mobilenet", "googlenet", "ms_concat", "ms_add"]
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        get_unit("vgg")


def _hand_set_multiscale(merge):
    """A width-4 unit whose convs are identities or known scalings and whose BNs are identity maps, so every
    branch can be computed by hand: expand = x, scale1 = 2x (first 2 maps), scale2 = 3x (first 2 maps)."""
    from mscompare.models import MultiScale

    u = MultiScale(4, merge, residual_norm=False).eval()
    with torch.no_grad():
        for m in u.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_(), m.running_var.fill_(1 - m.eps), m.weight.fill_(1), m.bias.zero_()
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                if m.groups > 1:  # depthwise 3x3: the identity kernel
                    m.weight[:, 0, 1, 1] = 1
        u.expand[0].weight[:, :, 0, 0] = torch.eye(4)
        u.scale1[1][0].weight[:, :, 0, 0] = 2 * torch.eye(4)[:2]
        u.scale2[0][1][0].weight[:, :, 0, 0] = torch.eye(4)[:2]
        u.scale2[1][1][0].weight[:, :, 0, 0] = 3 * torch.eye(2)
        if merge == "add":
            u.restore[0].weight[:, :, 0, 0] = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    return u


def test_multiscale_forward_computes_eq2_and_eq3_by_hand():
    x = torch.rand(1, 4, 5, 5)  # non-negative, so the ReLUs inside the branches pass it unchanged
    # Eq. 2 (concat): [G1, G2] = [2x0, 2x1, 3x0, 3x1]; residual: ReLU(x + that)
    g = torch.cat([2 * x[:, :2], 3 * x[:, :2]], 1)
    assert torch.allclose(_hand_set_multiscale("concat")(x), torch.relu(x + g), atol=1e-5)
    # Eq. 3 (add): G1 + G2 = 5 * x[:, :2], restored to 4 maps by [I; I], then the residual
    s = 5 * x[:, :2]
    assert torch.allclose(_hand_set_multiscale("add")(x), torch.relu(x + torch.cat([s, s], 1)), atol=1e-5)


def test_old_configs_rebuild_without_the_residual_norm():
    old = {"model": "ms_add", "units": 2, "width": 16, "in_channels": 1, "input_size": 28, "num_classes": 10,
           "hidden": 128, "dropout": 0.0}  # a config stored before expand and residual_norm existed
    cfg = ModelConfig.from_dict(old)
    assert cfg.residual_norm is False and cfg.expand == 1
    assert not any(n.endswith("norm.weight") for n, _ in build_model(cfg).named_parameters())
    assert ModelConfig(model="ms_add").residual_norm is True
    assert ModelConfig.from_dict(ModelConfig(model="ms_add").to_dict()).residual_norm is True


def test_expand_widens_only_the_multiscale_pointwise():
    # width 8, expand 2: expand 8->16 (+BN 32) = 160; scale1 SepConv(16->4): 144+32+64+8 = 248;
    # scale2 SepConv(16->4) 248 + SepConv(4->4) 68; residual BN 16  -> 160 + 248 + 316 + 16 = 740
    assert unit_params(ModelConfig(model="ms_concat", width=8, expand=2)) == 740
    assert unit_params(ModelConfig(model="alexnet", width=8, expand=2)) == HAND["alexnet"]


def test_expand_widens_only_the_multi_scale_units_in_info():
    """info --expand 2: the multi-scale units grow by the hand-computed amount, the others stay as they are."""
    import json

    from conftest import mscompare_cli

    two = {r["model"]: r for r in json.loads(mscompare_cli("info", "--dataset", "cifar10", "--json", "--expand",
                                                           "2").stdout)}
    one = {r["model"]: r for r in json.loads(mscompare_cli("info", "--dataset", "cifar10", "--json").stdout)}
    assert {m: r["expand"] for m, r in two.items()} == {m: (2 if m.startswith("ms_") else 1) for m in two}
    # width 32: the 1x1 expand conv (32 -> 64 instead of 32 -> 32) and its BN (2 x 64 instead of 2 x 32), the
    # depthwise 3x3 of both branches' first SepConv on 64 maps (+9 x 32 each, their BN +2 x 32 each) and those
    # SepConvs' pointwise 1x1 (64 -> 16 instead of 32 -> 16: +32 x 16 each)
    extra = 32 * 32 + 2 * 32 + 2 * (9 * 32 + 2 * 32 + 32 * 16)
    for m in ("ms_concat", "ms_add"):
        assert two[m]["unit_params"] - one[m]["unit_params"] == extra
    assert all(two[m]["params"] == one[m]["params"] for m in two if not m.startswith("ms_"))
