"""Training as a few plain functions: device and precision, evaluate, and train with live progress."""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from mscompare.config import PRESETS, TrainConfig, preset  # noqa: F401 - re-exported for callers
from mscompare.data import ArrayData, Batches
from mscompare.events import Progress
from mscompare.models import ModelConfig, build_model

PROGRESS_EVERY = 10  # iterations between live progress snapshots (loss, images/s, ETA)
WARMUP = 3  # iterations left out of images/s (allocator and CUDA start-up)


class TrainingError(RuntimeError):
    """A run failed in a way the user should see (NaN loss, out of memory, bad device, too little data)."""


class Cancelled(Exception):
    """The run was asked to stop."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("the cuda device was asked for, but no CUDA GPU is available here; choose cpu")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def available_devices() -> list[str]:
    """The devices present on this machine, for a device menu."""
    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def step_times(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> dict[str, float]:
    """Seconds per forward + backward step of a copy of `model` on batch (x, y), fp32 and bf16 autocast,
    interleaved after one warm-up step each. The model itself, its gradients and the RNG are untouched."""
    probe = copy.deepcopy(model).train()
    contexts = {"fp32": nullcontext, "bf16": lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)}
    total = dict.fromkeys(contexts, 0.0)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        for rep in range(steps + 1):
            for name, ctx in contexts.items():
                t = time.perf_counter()
                with ctx():
                    loss = F.cross_entropy(probe(x), y)
                loss.backward()
                probe.zero_grad(set_to_none=True)
                loss.item()  # waits for the GPU
                if rep:
                    total[name] += time.perf_counter() - t
    return {k: v / steps for k, v in total.items()}


def bf16_is_faster(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[bool, dict]:
    """The `auto` probe: a few training steps of this model on one batch in each precision. It times the
    model itself, not a matmul: these nets are mostly (depthwise) convolutions, whose bf16 kernels are not
    the matmul's, and the probe must answer for the run about to train. bf16 must win by 20%."""
    t = step_times(model, x, y)
    return t["bf16"] < 0.8 * t["fp32"], {f"{k}_step_ms": round(v * 1000, 2) for k, v in t.items()}


# Device types where `auto` may pick bf16 (when the probe also finds it faster). CPU: bf16 autocast kept every
# model's accuracy within or above fp32's seed spread on real MNIST and CIFAR-10 (docs/RESULTS.md). CUDA is not
# in it: not checked there, and on an H100 bf16 ran these small nets at 0.75-1.04x of fp32 (docs/gpu-check.md).
BF16_AUTO_DEVICES: tuple[str, ...] = ("cpu",)


def resolve_precision(name: str, model: torch.nn.Module, model_cfg: ModelConfig, batch_size: int,
                      device: torch.device) -> tuple[str, dict]:
    """fp32 or bf16 for this run, and the probe's step times where `auto` ran it (on a random batch of the
    run's shape: the values don't change the speed)."""
    if name != "auto":
        return name, {}
    if device.type not in BF16_AUTO_DEVICES:
        return "fp32", {}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, model_cfg.in_channels, model_cfg.input_size, model_cfg.input_size, generator=g)
    y = torch.randint(model_cfg.num_classes, (batch_size,), generator=g)
    faster, probe = bf16_is_faster(model, x.to(device, memory_format=torch.channels_last), y.to(device))
    return ("bf16" if faster else "fp32"), probe


def environment(device: torch.device, precision: str) -> dict:
    import platform

    import torchvision

    from mscompare.threads import current_policy

    env = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
           "device": str(device), "threads": torch.get_num_threads(), "precision": precision,
           "thread_policy": current_policy()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: Batches, autocast=nullcontext) -> float:
    model.eval()
    correct = total = 0
    for x, y in batches.eval_batches():
        with autocast():
            correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train()
    return correct / max(total, 1)


def confusion_summary(y_true: torch.Tensor, y_pred: torch.Tensor, confidence: torch.Tensor, num_classes: int,
                      worst: int = 32) -> dict:
    """Confusion matrix (rows: true class, columns: predicted), per-class accuracy, the most-confused class pairs
    and the test indices of the most confidently misclassified images."""
    cm = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    support = cm.sum(1)
    per_class = [cm[c, c].item() / support[c].item() if support[c] else None for c in range(num_classes)]
    off = cm.clone()
    off.fill_diagonal_(0)
    top = off.flatten().topk(min(5, num_classes ** 2))
    pairs = [{"true": int(i) // num_classes, "pred": int(i) % num_classes, "count": int(n)}
             for n, i in zip(top.values.tolist(), top.indices.tolist()) if n > 0]
    wrong = (y_true != y_pred).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True)[:worst]
    worst_rows = [{"index": int(wrong[i]), "true": int(y_true[wrong[i]]), "pred": int(y_pred[wrong[i]]),
                   "confidence": round(float(confidence[wrong[i]]), 4)} for i in order.tolist()]
    return {"accuracy": cm.diag().sum().item() / max(cm.sum().item(), 1), "confusion": cm.tolist(),
            "per_class": per_class, "confused_pairs": pairs, "misclassified": worst_rows}


def evaluate_full(model: torch.nn.Module, batches: Batches, num_classes: int, autocast=nullcontext):
    """The whole test set once: (confusion_summary() plus the calibration error, the per-image Predictions)."""
    from mscompare.predictions import predict_batches
    from mscompare.stats import calibration

    preds = predict_batches(model, batches, autocast)
    model.train()
    summary = confusion_summary(torch.from_numpy(preds.true).long(), torch.from_numpy(preds.pred).long(),
                                torch.from_numpy(preds.prob), num_classes)
    cal = calibration(preds.prob, preds.correct)
    return {**summary, "ece": cal["ece"], "reliability": cal}, preds


def make_optimizer(params: list[torch.Tensor], cfg: TrainConfig):
    """The preset's optimizer and schedule. Both are elementwise, so stacked (fused) runs each get their own."""
    fused = {"fused": True} if params[0].is_cuda else {}
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay, **fused)
    sched = None
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.iters, pct_start=0.25)
    return opt, sched


def nan_message(value: float, it: int, cfg: TrainConfig) -> str:
    return (f"the loss became {value} at iteration {it}. Likely causes: a learning rate too high for this model "
            f"(now {cfg.lr:g}; try {cfg.lr / 10:g}), or training images with (nearly) zero variance, which "
            f"normalization divides by; check that the images are not all one value.")


def check_trainable(cfg: TrainConfig, train_data: ArrayData, test_data: ArrayData) -> None:
    """Fail at once, with the counts, where training could not make progress."""
    if len(train_data) < cfg.batch_size:
        raise TrainingError(f"the training set has {len(train_data)} images, fewer than the batch size "
                            f"{cfg.batch_size}; lower the batch size to at most {len(train_data)} or add images")
    if len(test_data) == 0:
        raise TrainingError("the test set has no images; add a test split to measure accuracy")


def norm_stats(train_data: ArrayData) -> tuple[list[float], list[float]]:
    """The training set's per-channel mean and std (0..1 scale); fails where a channel is constant."""
    mean, std = train_data.mean_std()
    if min(std) < 1e-3:
        raise TrainingError(f"the training images have zero variance (every pixel {mean[0] * 255:.0f} in channel 0 "
                            f"or another channel constant), so they can't be normalized or learned from")
    return mean, std


def autocast_for(precision: str, device: torch.device):
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_data: ArrayData, test_data: ArrayData,
          progress: Callable[[Progress], None] | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Train one model. `progress` gets a events.Progress every PROGRESS_EVERY iterations (a step: loss, images/s,
    ETA) and at every eval point (with test_acc). Returns the result dict, including `model`
    (trained, on CPU) and `curve` [(iter, test_acc, train_loss)]. Process-wide settings (threads, allocator)
    belong to the process that calls this; the global RNG is restored on return. While it trains, the
    process is marked as training (threads.training_mark), so the app on this machine yields it the CPU."""
    from mscompare.threads import training_mark

    with training_mark():
        return _train(model_cfg, cfg, train_data, test_data, progress, should_stop)


def _train(model_cfg, cfg, train_data, test_data, progress, should_stop) -> dict:
    check_trainable(cfg, train_data, test_data)
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg).to(device, memory_format=torch.channels_last)
    precision, probe = resolve_precision(cfg.precision, model, model_cfg, cfg.batch_size, device)
    autocast = autocast_for(precision, device)
    mean, std = norm_stats(train_data)
    tr = Batches(train_data, mean, std, device, augment=cfg.augment, seed=cfg.seed)
    te_curve = Batches(test_data.stratified(cfg.eval_subset) if cfg.eval_subset else test_data, mean, std, device)
    opt, sched = make_optimizer(list(model.parameters()), cfg)
    curve: list[tuple[int, float, float]] = []
    t0 = time.perf_counter()
    train_time, loss_sum, loss_n, timed_iters = 0.0, 0.0, 0, 0
    batches = tr.train_batches(cfg.batch_size)
    model.train()
    for it in range(1, cfg.iters + 1):
        if should_stop is not None and should_stop():
            raise Cancelled()
        ts = time.perf_counter()
        x, y = next(batches)
        with autocast():
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        report = it % PROGRESS_EVERY == 0 or it == cfg.iters or it % cfg.eval_every == 0
        if report:
            lv = loss.item()  # the sync also makes the step time below honest on CUDA
            if not math.isfinite(lv):
                raise TrainingError(nan_message(lv, it, cfg))
            loss_sum, loss_n = loss_sum + lv, loss_n + 1
        if it > WARMUP:
            train_time += time.perf_counter() - ts
            timed_iters += 1
        if report and progress is not None:
            elapsed = time.perf_counter() - t0
            progress(Progress(it, cfg.iters, lv, timed_iters * cfg.batch_size / max(train_time, 1e-9), elapsed,
                              elapsed / it * (cfg.iters - it)))
        if it % cfg.eval_every == 0 or it == cfg.iters:
            acc = evaluate(model, te_curve, autocast)
            curve.append((it, acc, loss_sum / max(loss_n, 1)))
            loss_sum, loss_n = 0.0, 0
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress(Progress(it, cfg.iters, curve[-1][2], timed_iters * cfg.batch_size / max(train_time, 1e-9),
                                  elapsed, elapsed / it * (cfg.iters - it), test_acc=acc))
    evaluation, preds = evaluate_full(model, Batches(test_data, mean, std, device), model_cfg.num_classes, autocast)
    final_acc = evaluation["accuracy"]
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    ips = timed_iters * cfg.batch_size / train_time if timed_iters else cfg.iters * cfg.batch_size / max(
        time.perf_counter() - t0, 1e-9)
    return {"test_acc": final_acc, "curve": curve, "seconds": time.perf_counter() - t0, "images_per_s": ips,
            "model": model, "norm": {"mean": mean, "std": std}, "env": {**environment(device, precision), **probe},
            "evaluation": evaluation, "predictions": preds}
