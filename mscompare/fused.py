"""Fused training: K runs of one architecture that differ only in seed, trained as one vmapped computation.

Each run keeps its own initialization, batch order and augmentation (its own seeded Batches), its own optimizer
state (Adam and SGD are elementwise, so one optimizer over the stacked parameters keeps K independent states),
its own BatchNorm running statistics (stacked buffers), its own progress, curve, evaluation and checkpoint.
The K runs sit side by side in the channels of one widened model (grouped convolutions, HFTA-style; see
widen()); a unit that concatenates channels does it with models.cat_channels, which keeps each run's maps
together. In float64 the fused runs equal separate runs to round-off
(tests/test_fused.py); in fp32 they differ as much as two summation orders of one run do (docs/FUSED.md)."""
from __future__ import annotations

import copy
import json
import math
import time
from collections import defaultdict
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mscompare.config import TrainConfig
from mscompare.data import ArrayData, Batches
from mscompare.events import Progress
from mscompare.models import ModelConfig, build_model
from mscompare.train import (PROGRESS_EVERY, WARMUP, Cancelled, TrainingError, autocast_for, check_trainable,
                             environment, evaluate, evaluate_full, make_optimizer, nan_message, norm_stats,
                             resolve_device, resolve_precision)

# TrainConfig fields that may differ between the runs of one fused group (the rest must be equal).
PER_RUN = ("seed", "threads")


def why_not_fused(model_cfgs: list[ModelConfig], cfgs: list[TrainConfig]) -> str | None:
    """None where these runs can train fused, else the reason in a few words."""
    if len(cfgs) < 2:
        return "a single run"
    if any(m != model_cfgs[0] for m in model_cfgs[1:]):
        return "different architectures"
    strip = [replace(c, seed=0, threads=0) for c in cfgs]
    if any(c != strip[0] for c in strip[1:]):
        return "different training settings"
    if len({c.seed for c in cfgs}) != len(cfgs):
        return "repeated seeds"
    layer = unfusable_layer(build_model(model_cfgs[0]))
    if layer:
        return f"the {model_cfgs[0].model} unit has a {layer} layer, which fused training can't widen"
    return None


def group_key(model_cfg: ModelConfig, cfg: TrainConfig) -> str:
    """What runs of one fused group share: the architecture and the protocol less the seed."""
    return json.dumps([model_cfg.to_dict(), replace(cfg, seed=0, threads=0).to_dict()], sort_keys=True)


class FusedLinear(nn.Module):
    """K linear layers side by side: input (B, K*in) -> output (B, K*out). The weight is the K weights
    concatenated along dim 0, like every fused parameter, so run k's slice is weight.view(K, out, in)[k]."""

    def __init__(self, runs: int, lin: nn.Linear):
        super().__init__()
        self.runs, self.inp, self.out = runs, lin.in_features, lin.out_features
        self.weight = nn.Parameter(torch.empty(runs * self.out, self.inp, dtype=lin.weight.dtype))
        self.bias = nn.Parameter(torch.empty(runs * self.out, dtype=lin.weight.dtype))

    def forward(self, x):
        b = x.shape[0]
        w = self.weight.view(self.runs, self.out, self.inp)
        y = torch.baddbmm(self.bias.view(self.runs, 1, self.out), x.reshape(b, self.runs, self.inp).transpose(0, 1),
                          w.transpose(1, 2))
        return y.transpose(0, 1).reshape(b, self.runs * self.out)


FUSABLE_LEAVES = (nn.ReLU, nn.MaxPool2d, nn.Identity)


def unfusable_layer(model: nn.Module) -> str | None:
    """The type of the first layer that fused training can't widen, or None."""
    for m in model.modules():
        if not list(m.children()) and not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, *FUSABLE_LEAVES)):
            return type(m).__name__
    return None


def widen(model: nn.Module, runs: int) -> nn.Module:
    """A copy of `model` whose layers hold `runs` runs side by side in the channels (HFTA's horizontal fusion):
    a conv becomes a grouped conv with `runs` times the groups, a BatchNorm has `runs` times the channels (so
    each run keeps its own statistics), a Linear becomes a FusedLinear. Weights are left uninitialised."""
    wide = copy.deepcopy(model)
    for name, m in list(wide.named_modules()):
        for child_name, c in list(m.named_children()):
            if isinstance(c, nn.Conv2d):
                new = nn.Conv2d(runs * c.in_channels, runs * c.out_channels, c.kernel_size, c.stride, c.padding,
                                c.dilation, runs * c.groups, c.bias is not None, dtype=c.weight.dtype)
            elif isinstance(c, nn.BatchNorm2d):
                new = nn.BatchNorm2d(runs * c.num_features, c.eps, c.momentum, dtype=c.weight.dtype)
            elif isinstance(c, nn.Linear):
                new = FusedLinear(runs, c)
            else:
                if hasattr(c, "runs"):
                    c.runs = runs
                continue
            setattr(m, child_name, new)
    return wide


class _Stack:
    """K runs as one widened model: the K state dicts concatenated along dim 0, one optimizer over it (Adam and
    SGD are elementwise, so each run keeps its own state), and the per-run models the weights go back into."""

    def __init__(self, models: list[nn.Module], cfg: TrainConfig):
        self.models, self.cfg = models, cfg
        self.wide = widen(models[0], len(models)).to(next(models[0].parameters()).device, memory_format=torch.channels_last)
        self.wide.load_state_dict(self._stacked([m.state_dict() for m in models]))
        self.wide.train()
        self.opt, self.sched = make_optimizer(list(self.wide.parameters()), cfg)

    @staticmethod
    def _stacked(states: list[dict]) -> dict:
        return {k: torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k] for k in states[0]}

    @property
    def runs(self) -> int:
        return len(self.models)

    def losses(self, xs, ys, label_smoothing: float, autocast):
        """Each run's loss on its own batch: xs (K, B, C, H, W), ys (K, B) -> (K,)."""
        k, b, c, h, w = xs.shape
        x = xs.transpose(0, 1).reshape(b, k * c, h, w).contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = self.wide(x).view(b, k, -1)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()
        per_image = F.cross_entropy(logits.permute(0, 2, 1), ys.transpose(0, 1), reduction="none",
                                    label_smoothing=label_smoothing)
        return per_image.mean(0)

    def step(self, losses: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # run k's loss reaches only run k's slice: its gradient is the separate one
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    @torch.no_grad()
    def model(self, k: int) -> nn.Module:
        """Run k's own module with its current weights and BatchNorm statistics."""
        m = self.models[k]
        m.load_state_dict(self._slice(self.wide.state_dict(), [k], single=True))
        return m

    def _slice(self, state: dict, idx: list[int], single: bool = False) -> dict:
        out = {}
        for name, v in state.items():
            if v.dim() == 0:
                out[name] = v
                continue
            per_run = v.view(self.runs, -1, *v.shape[1:])[idx]
            out[name] = per_run[0] if single else per_run.reshape(-1, *v.shape[1:])
        return out

    def keep(self, idx: list[int]) -> None:
        """Drop every run not in `idx` (cancelled or failed): rebuild the wide model and slice the optimizer state."""
        old_params = dict(self.wide.named_parameters())
        old_state = {name: self.opt.state.get(p, {}) for name, p in old_params.items()}
        state, k_old = self._slice(self.wide.state_dict(), idx), self.runs
        self.models = [self.models[i] for i in idx]
        self.wide = widen(self.models[0], len(idx)).to(next(self.models[0].parameters()).device, memory_format=torch.channels_last)
        self.wide.load_state_dict(state)
        self.wide.train()
        lr = self.opt.param_groups[0]["lr"]
        params = dict(self.wide.named_parameters())
        self.opt.param_groups[0]["params"] = list(params.values())
        self.opt.param_groups[0]["lr"] = lr
        self.opt.state = defaultdict(dict)
        for name, st in old_state.items():
            for key, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    v = v.view(k_old, -1, *v.shape[1:])[idx].reshape(-1, *v.shape[1:])
                self.opt.state[params[name]][key] = v


FUSE_MODES = ("auto", "on", "off")
FUSE_GAIN = 1.2  # `auto` fuses where K fused steps take at most 1/1.2 of K separate steps' time


def fused_speedup(model_cfg: ModelConfig, cfg: TrainConfig, runs: int, steps: int = 3) -> dict:
    """Time `steps` training steps of `runs` fused copies against `runs` separate steps each, on random batches of
    the run's shape, interleaved after one warm-up each. RNG and no real model are touched. Returns the ratio
    (separate time / fused time: above 1 means fusing is faster) and both step times."""
    import contextlib

    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        models = [build_model(model_cfg).to(device, memory_format=torch.channels_last) for _ in range(runs)]
        stack = _Stack([copy.deepcopy(m) for m in models], cfg)
        single, opt = models[0], make_optimizer(list(models[0].parameters()), cfg)[0]
        shape = (runs, cfg.batch_size, model_cfg.in_channels, model_cfg.input_size, model_cfg.input_size)
        xs = torch.randn(shape, device=device)
        ys = torch.randint(model_cfg.num_classes, shape[:2], device=device)
        t_fused = t_sep = 0.0
        for rep in range(steps + 1):
            t = time.perf_counter()
            stack.step(stack.losses(xs, ys, 0.0, contextlib.nullcontext))
            next(stack.wide.parameters()).sum().item()  # waits for the GPU
            t1 = time.perf_counter()
            for k in range(runs):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(single(xs[k].contiguous(memory_format=torch.channels_last)), ys[k]).backward()
                opt.step()
            next(single.parameters()).sum().item()
            if rep:
                t_fused, t_sep = t_fused + t1 - t, t_sep + time.perf_counter() - t1
    return {"ratio": round(t_sep / max(t_fused, 1e-9), 3), "fused_step_ms": round(1000 * t_fused / steps, 2),
            "separate_steps_ms": round(1000 * t_sep / steps, 2), "runs": runs}


def train_fused(model_cfg: ModelConfig, cfgs: list[TrainConfig], train_data: ArrayData, test_data: ArrayData,
                progress: list[Callable[[Progress], None] | None] | None = None,
                should_stop: list[Callable[[], bool] | None] | None = None,
                on_end: Callable[[int, BaseException], None] | None = None) -> list[dict | BaseException]:
    """Train len(cfgs) seeds of one configuration fused. Per run: the result dict train() returns (with
    env["fused"] = K), or the exception that ended that run (Cancelled, TrainingError); the others go on.
    `on_end(k, exception)` hears of a run that ends early at once, not when the group ends."""
    from mscompare.threads import training_mark

    reason = why_not_fused([model_cfg] * len(cfgs), cfgs)
    if reason and reason != "a single run":
        raise ValueError(f"these runs can't train fused: {reason}")
    with training_mark():
        return _train_fused(model_cfg, cfgs, train_data, test_data, progress or [None] * len(cfgs),
                            should_stop or [None] * len(cfgs), on_end or (lambda k, e: None))


def _train_fused(model_cfg, cfgs, train_data, test_data, progress, should_stop, on_end) -> list:
    cfg, k_all = cfgs[0], len(cfgs)
    check_trainable(cfg, train_data, test_data)
    device = resolve_device(cfg.device)
    models = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for c in cfgs:
            torch.manual_seed(c.seed)
            models.append(build_model(model_cfg).to(device, memory_format=torch.channels_last))
    precision, probe = resolve_precision(cfg.precision, models[0], model_cfg, cfg.batch_size, device)
    autocast = autocast_for(precision, device)
    mean, std = norm_stats(train_data)
    streams = [Batches(train_data, mean, std, device, augment=c.augment, seed=c.seed).train_batches(c.batch_size)
               for c in cfgs]
    te_curve = Batches(test_data.stratified(cfg.eval_subset) if cfg.eval_subset else test_data, mean, std, device)
    stack = _Stack(models, cfg)
    live = list(range(k_all))  # run indices still training, in stack order
    results: list = [None] * k_all
    curves = [[] for _ in cfgs]
    loss_sum, loss_n = [0.0] * k_all, [0] * k_all
    t0 = time.perf_counter()
    train_time, timed_iters = 0.0, 0
    for it in range(1, cfg.iters + 1):
        stopped = [r for r in live if should_stop[r] is not None and should_stop[r]()]
        for r in stopped:
            results[r] = Cancelled()
            on_end(r, results[r])
        _drop(stack, live, stopped)
        if not live:
            break
        ts = time.perf_counter()
        batches = [next(streams[r]) for r in live]
        xs, ys = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
        losses = stack.losses(xs, ys, cfg.label_smoothing, autocast)
        stack.step(losses)
        report = it % PROGRESS_EVERY == 0 or it == cfg.iters or it % cfg.eval_every == 0
        if it > WARMUP:
            train_time += time.perf_counter() - ts
            timed_iters += 1
        if not report:
            continue
        values = losses.detach().float().tolist()
        failed = [r for r, v in zip(live, values) if not math.isfinite(v)]
        for r in failed:
            results[r] = TrainingError(nan_message(values[live.index(r)], it, cfg))
            on_end(r, results[r])
        ips = timed_iters * cfg.batch_size / max(train_time, 1e-9)  # each run's own images per second
        elapsed = time.perf_counter() - t0
        eta = elapsed / it * (cfg.iters - it)
        evaluating = it % cfg.eval_every == 0 or it == cfg.iters
        for r, v in zip(live, values):
            if r in failed:
                continue
            loss_sum[r], loss_n[r] = loss_sum[r] + v, loss_n[r] + 1
            if progress[r] is not None:
                progress[r](Progress(it, cfg.iters, v, ips, elapsed, eta))
            if evaluating:
                acc = evaluate(stack.model(live.index(r)), te_curve, autocast)
                curves[r].append((it, acc, loss_sum[r] / max(loss_n[r], 1)))
                loss_sum[r], loss_n[r] = 0.0, 0
                if progress[r] is not None:
                    progress[r](Progress(it, cfg.iters, curves[r][-1][2], ips, elapsed, eta, test_acc=acc))
        _drop(stack, live, failed)
    seconds = time.perf_counter() - t0
    env = {**environment(device, precision), **probe, "fused": k_all}
    ips = timed_iters * cfg.batch_size / train_time if timed_iters else cfg.iters * cfg.batch_size / max(seconds, 1e-9)
    for pos, r in enumerate(live):
        model = stack.model(pos)
        evaluation, preds = evaluate_full(model, Batches(test_data, mean, std, device), model_cfg.num_classes,
                                          autocast)
        results[r] = {"test_acc": evaluation["accuracy"], "curve": curves[r], "seconds": seconds,
                      "images_per_s": ips, "model": copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval(),
                      "norm": {"mean": mean, "std": std}, "env": env, "evaluation": evaluation,
                      "predictions": preds}
    return results


def _drop(stack: _Stack, live: list[int], gone: list[int]) -> None:
    """Take the runs in `gone` out of the stack (and of `live`, in place)."""
    if not gone:
        return
    keep = [i for i, r in enumerate(live) if r not in gone]
    live[:] = [live[i] for i in keep]
    if live:
        stack.keep(keep)
