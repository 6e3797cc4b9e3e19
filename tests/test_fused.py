"""Fused training equals separate training: every registered unit, K = 3 seeds, in float64 and in fp32."""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from mscompare import fused, train as train_mod
from mscompare.config import TrainConfig
from mscompare.data import load_dataset
from mscompare.models import ModelConfig, build_model, list_units

K = 3


@pytest.mark.parametrize("unit", list_units())
def test_stacked_step_equals_separate_steps_in_float64(unit):
    """The mechanism alone, without fp32 round-off: 20 Adam steps on K seeds, fused vs one by one."""
    cfg = ModelConfig(model=unit, width=8, units=2, in_channels=3, input_size=16, num_classes=4)
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(build_model(cfg).double())
    separate = [copy.deepcopy(m) for m in models]
    stack = fused._Stack(models, TrainConfig(lr=1e-3))
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in separate]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ys = torch.randint(4, (K, 16), generator=g)
        xs = torch.randn(K, 16, 3, 16, 16, generator=g, dtype=torch.float64) + ys.view(K, 16, 1, 1, 1)
        losses = stack.losses(xs, ys, 0.0, contextlib.nullcontext)
        stack.step(losses)
        for k, (m, o) in enumerate(zip(separate, opts)):
            loss = F.cross_entropy(m(xs[k]), ys[k])
            o.zero_grad()
            loss.backward()
            o.step()
            assert abs(loss.item() - losses[k].item()) < 1e-12
    for k, m in enumerate(separate):
        mine = stack.model(k)
        for (name, p), q in zip(m.state_dict().items(), mine.state_dict().values()):
            assert torch.allclose(p.double(), q.double(), rtol=0, atol=1e-9), (unit, name)


@pytest.mark.parametrize("unit", list_units())
def test_fused_runs_match_separate_runs_in_fp32(unit, tiny_npz, monkeypatch):
    """train_fused against train(): losses at every step and weights after 20 steps, K = 3 seeds. fp32 round-off
    grows over the steps as it does between two summation orders of one run (docs/FUSED.md)."""
    monkeypatch.setattr(train_mod, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(fused, "PROGRESS_EVERY", 1)
    tr, te = load_dataset("tinydigits", tiny_npz)
    mcfg = ModelConfig(model=unit, width=8, units=2, num_classes=4)
    cfgs = [TrainConfig(dataset="tinydigits", iters=20, batch_size=32, eval_every=10, eval_subset=0, device="cpu",
                        seed=s) for s in range(K)]
    seen = [[] for _ in cfgs]
    res = fused.train_fused(mcfg, cfgs, tr, te, [seen[k].append for k in range(K)])
    for k, c in enumerate(cfgs):
        alone = []
        ref = train_mod.train(mcfg, c, tr, te, alone.append)
        steps = [e.loss for e in alone if not e.is_eval]
        mine = [e.loss for e in seen[k] if not e.is_eval]
        assert len(steps) == len(mine) == 20
        assert max(abs(a - b) for a, b in zip(steps, mine)) < 2e-3, (unit, k)
        for (name, p), q in zip(ref["model"].state_dict().items(), res[k]["model"].state_dict().values()):
            assert torch.allclose(p.float(), q.float(), rtol=0, atol=2e-2), (unit, k, name)
        assert res[k]["env"]["fused"] == K and len(res[k]["predictions"].pred) == len(te)
        assert [p[0] for p in res[k]["curve"]] == [p[0] for p in ref["curve"]] == [10, 20]


def test_batchnorm_statistics_stay_per_run(tiny_npz):
    tr, te = load_dataset("tinydigits", tiny_npz)
    mcfg = ModelConfig(model="mobilenet", width=8, units=2, num_classes=4)
    cfgs = [TrainConfig(dataset="tinydigits", iters=10, batch_size=32, eval_every=10, device="cpu", seed=s)
            for s in range(2)]
    res = fused.train_fused(mcfg, cfgs, tr, te)
    means = [r["model"].stem[0][1].running_mean for r in res]
    assert not torch.equal(means[0], means[1])  # each run saw its own batches
    alone = train_mod.train(mcfg, cfgs[1], tr, te)
    assert torch.allclose(alone["model"].stem[0][1].running_mean, means[1], atol=1e-4)


def test_one_run_cancelled_the_others_finish(tiny_npz):
    tr, te = load_dataset("tinydigits", tiny_npz)
    mcfg = ModelConfig(model="mobilenet", width=8, units=2, num_classes=4)
    cfgs = [TrainConfig(dataset="tinydigits", iters=30, batch_size=32, eval_every=10, device="cpu", seed=s)
            for s in range(3)]
    seen = [[] for _ in cfgs]
    stop_1 = lambda: any(e.iter >= 10 for e in seen[1])  # noqa: E731 - cancel run 1 after its 10th step
    res = fused.train_fused(mcfg, cfgs, tr, te, [s.append for s in seen], [None, stop_1, None])
    assert isinstance(res[1], train_mod.Cancelled)
    assert res[0]["curve"][-1][0] == res[2]["curve"][-1][0] == 30
    alone = train_mod.train(mcfg, cfgs[2], tr, te)
    assert abs(alone["test_acc"] - res[2]["test_acc"]) <= 0.02  # dropping run 1 left run 2 as it would be


def test_what_fuses():
    m = ModelConfig(model="mobilenet", width=8)
    a, b = TrainConfig(seed=0), TrainConfig(seed=1)
    assert fused.why_not_fused([m, m], [a, b]) is None
    assert fused.why_not_fused([m, ModelConfig(model="alexnet", width=8)], [a, b]) == "different architectures"
    assert fused.why_not_fused([m, m], [a, TrainConfig(seed=1, lr=0.1)]) == "different training settings"
    assert fused.why_not_fused([m, m], [a, a]) == "repeated seeds"


@pytest.mark.slow
def test_train_seeds_fused_matches_unfused_from_the_cli(tiny_npz, tmp_path):
    import json

    from conftest import mscompare_cli

    common = ["train", "--model", "ms_concat", "--dataset", "tinydigits", "--data-root", str(tiny_npz), "--width",
              "8", "--iters", "50", "--eval-every", "50", "--batch-size", "32", "--seeds", "3", "--json",
              "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]
    out = {}
    for mode in ("on", "off"):
        p = mscompare_cli(*common, "--fuse", mode)
        assert p.returncode == 0, p.stderr
        out[mode] = [json.loads(x) for x in p.stdout.splitlines() if '"batch"' in x]
    assert [r["fused"] for r in out["on"]] == [3, 3, 3] and [r["fused"] for r in out["off"]] == [1, 1, 1]
    assert [r["seed"] for r in out["on"]] == [r["seed"] for r in out["off"]] == [0, 1, 2]
    for a, b in zip(out["on"], out["off"]):
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.005


def test_a_unit_with_a_layer_fusing_cannot_widen_falls_back_and_says_so(monkeypatch):
    from torch import nn

    from mscompare import models

    monkeypatch.setitem(models._UNITS, "with_dropout", lambda cfg: nn.Sequential(nn.Dropout(0.1)))
    m = ModelConfig(model="with_dropout", width=8)
    reason = fused.why_not_fused([m, m], [TrainConfig(seed=0), TrainConfig(seed=1)])
    assert reason == "the with_dropout unit has a Dropout layer, which fused training can't widen"
