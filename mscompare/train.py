"""Training as a few plain functions: presets, device/CPU setup, evaluate, and train with live progress."""
from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mscompare.config import ModelConfig
from mscompare.data import ArrayData, Batches
from mscompare.models import build_model

PAPER_ITERS = {"mnist": 5000, "cifar10": 5000, "svhn": 10000, "tiny-imagenet": 42000}
PAPER_EVAL_EVERY = {"tiny-imagenet": 3000}


class TrainingError(RuntimeError):
    """A run failed in a way the user should see (NaN loss, out of memory, bad device)."""


class Cancelled(Exception):
    """The run was asked to stop."""


@dataclass
class TrainConfig:
    """How to train; stored with every run so it can be repeated."""

    dataset: str = "mnist"
    data_root: str = "data"
    preset: str = "paper"
    iters: int = 5000
    batch_size: int = 128
    eval_every: int = 100
    eval_subset: int = 2000  # stratified test subset for the curve; the final accuracy uses the whole test set
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    augment: bool = False
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    threads: int = 0  # 0 keeps torch's default

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def preset(name: str, dataset: str, **overrides) -> TrainConfig:
    """paper: batch 128, the paper's iterations, Adam 1e-3 constant. quick: 300 iters for the app.
    modern: same budget as paper, SGD-nesterov one-cycle, label smoothing, weight decay, crop/flip."""
    iters = PAPER_ITERS.get(dataset, 5000)
    base = dict(dataset=dataset, preset=name, iters=iters, eval_every=PAPER_EVAL_EVERY.get(dataset, 100))
    if name == "paper":
        pass
    elif name == "quick":
        base.update(iters=300, eval_every=50)
    elif name == "modern":
        base.update(optimizer="sgd", lr=0.2, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1,
                    augment=True)
    else:
        raise ValueError(f"unknown preset {name!r}; choose paper, quick or modern")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


PRESETS = ("paper", "quick", "modern")


def tune_malloc() -> None:
    """Stop glibc from returning (and re-faulting) large buffers to the OS every step.
    MSCOMPARE_MALLOC=default skips it (for the benchmark's A/B)."""
    if os.environ.get("MSCOMPARE_MALLOC") == "default":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)
    except (OSError, AttributeError):
        pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but no CUDA GPU is available here; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def environment(device: torch.device) -> dict:
    import platform

    import torchvision

    env = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: Batches) -> float:
    model.eval()
    correct = total = 0
    for x, y in batches.eval_batches():
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


def _optimizer(model, cfg: TrainConfig):
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        raise TrainingError(f"unknown optimizer {cfg.optimizer!r}; choose adam or sgd")
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.iters, pct_start=0.25)
    elif cfg.schedule == "constant":
        sched = None
    else:
        raise TrainingError(f"unknown schedule {cfg.schedule!r}; choose constant or onecycle")
    return opt, sched


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_data: ArrayData, test_data: ArrayData,
          progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Train one model; call `progress` with a snapshot after every eval point. Returns the result dict,
    including `model` (trained, on CPU) and `curve` [(iter, test_acc, train_loss)]."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tune_malloc()
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device, memory_format=torch.channels_last)
    mean, std = train_data.mean_std()
    tr = Batches(train_data, mean, std, device, augment=cfg.augment, seed=cfg.seed)
    te_curve = Batches(test_data.stratified(cfg.eval_subset) if cfg.eval_subset else test_data, mean, std, device)
    opt, sched = _optimizer(model, cfg)
    curve: list[tuple[int, float, float]] = []
    t0 = time.perf_counter()
    train_time, loss_sum, loss_n = 0.0, 0.0, 0
    batches = tr.train_batches(cfg.batch_size)
    for it in range(1, cfg.iters + 1):
        if should_stop is not None and should_stop():
            raise Cancelled()
        ts = time.perf_counter()
        model.train()
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if it % 20 == 0 or it == cfg.iters or it % cfg.eval_every == 0:
            lv = loss.item()
            if not math.isfinite(lv):
                raise TrainingError(f"loss became {lv} at iteration {it}; lower the learning rate (now {cfg.lr})")
            loss_sum, loss_n = loss_sum + lv, loss_n + 1
        train_time += time.perf_counter() - ts
        if it % cfg.eval_every == 0 or it == cfg.iters:
            acc = evaluate(model, te_curve)
            curve.append((it, acc, loss_sum / max(loss_n, 1)))
            loss_sum, loss_n = 0.0, 0
            if progress is not None:
                ips = it * cfg.batch_size / train_time
                elapsed = time.perf_counter() - t0
                progress({"iter": it, "iters": cfg.iters, "test_acc": acc, "loss": curve[-1][2],
                          "images_per_s": ips, "elapsed": elapsed, "eta": elapsed / it * (cfg.iters - it)})
    final_acc = evaluate(model, Batches(test_data, mean, std, device)) if cfg.eval_subset else curve[-1][1]
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    return {"test_acc": final_acc, "curve": curve, "seconds": time.perf_counter() - t0,
            "images_per_s": cfg.iters * cfg.batch_size / train_time, "model": model,
            "norm": {"mean": mean, "std": std}, "env": environment(device)}
