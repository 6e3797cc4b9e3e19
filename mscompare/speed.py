"""Speed measured on this machine: batch-1 inference latency and training images/s of each model, kept short."""
from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from mscompare.config import config_for
from mscompare.models import ModelConfig, build_model, list_units

SPEED_COLUMNS = ["latency_1t_ms", "latency_ms", "threads", "train_img_s"]


@contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` intra-op threads (None or 0: as it is), then restore the previous count.
    The count is per calling thread for OpenMP, but torch also takes it as the default for threads started
    meanwhile, so keep the block short."""
    old = torch.get_num_threads()
    if n and n != old:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def inference_latency_ms(model: nn.Module, x: torch.Tensor, threads: int | None = None, warmup: int = 3,
                         reps: int = 30, budget_s: float = 0.25, min_reps: int = 3) -> float:
    """Median wall time (ms) of one forward pass of `x` in eval mode under torch.inference_mode. Up to
    `warmup` untimed passes (at least one), then up to `reps` timed ones; once `budget_s` (both together)
    is spent it stops, after at least `min_reps` timed passes."""
    model.eval()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    with torch_threads(threads), torch.inference_mode():
        for _ in range(max(warmup, 1)):
            model(x)
            if time.perf_counter() > deadline:
                break
        while len(times) < max(reps, min_reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            if len(times) >= min_reps and time.perf_counter() > deadline:
                break
    return statistics.median(times) * 1e3


def training_images_per_s(model: nn.Module, cfg: ModelConfig, batch: int = 128, steps: int = 4, warmup: int = 1,
                          budget_s: float = 1.0, lr: float = 1e-3, seed: int = 0) -> float:
    """Images per second of Adam training steps (forward, cross-entropy, backward, update) at `batch` on
    random data of `cfg`'s shape with the thread count as it is. Up to `warmup` untimed steps (at least
    one), then up to `steps` timed ones, fewer (at least one) once `budget_s` (both together) is spent.
    The model is trained in place: its parameters change."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    deadline = time.perf_counter() + budget_s
    for _ in range(max(warmup, 1)):
        step()
        if time.perf_counter() > deadline:
            break
    done, start = 0, time.perf_counter()
    while done < max(steps, 1):
        step()
        done += 1
        if time.perf_counter() > deadline:
            break
    return batch * done / (time.perf_counter() - start)


def measure(cfg: ModelConfig, batch: int = 128, budget_s: float = 1.5) -> dict:
    """Speed of a freshly built model of `cfg` on this machine's CPU: batch-1 latency with one thread and
    with the process default, and training images/s at `batch` with the process default. `budget_s` is
    the aim for the whole (a third for latency, the rest for training); a model slower than that still
    gets its minimum passes and steps, so a wide net on 64x64 inputs takes longer."""
    with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG; leave it as it was
        torch.manual_seed(0)
        model = build_model(cfg)
    x = torch.randn(1, cfg.in_channels, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    lat_budget = budget_s / 6
    row = {"latency_1t_ms": inference_latency_ms(model, x, threads=1, budget_s=lat_budget),
           "latency_ms": inference_latency_ms(model, x, budget_s=lat_budget),
           "threads": torch.get_num_threads(),
           "train_img_s": training_images_per_s(model, cfg, batch=batch, budget_s=budget_s * 2 / 3)}
    for k in ("latency_1t_ms", "latency_ms", "train_img_s"):
        if not (math.isfinite(row[k]) and row[k] > 0):
            raise RuntimeError(f"{k} measured as {row[k]} for {cfg.model}: the clock or the run is broken")
    return row


def measure_all(dataset: str = "mnist", units: int | None = None, width: int = 32, batch: int = 128,
                budget_s: float = 1.5, models: list[str] | None = None) -> pd.DataFrame:
    """One row per model (every registered one unless `models`) at the dataset's shape, the unit count
    (None: the paper's) and width of the comparison table: model, units and SPEED_COLUMNS."""
    rows = []
    for name in models or list_units():
        cfg = config_for(name, dataset, units=units, width=width)
        rows.append({"model": name, "units": cfg.units, **measure(cfg, batch=batch, budget_s=budget_s)})
    return pd.DataFrame(rows, columns=["model", "units", *SPEED_COLUMNS])


def latency_1t_ms(cfg: ModelConfig, budget_s: float = 0.25) -> float:
    """Batch-1 inference latency (ms, median) of a freshly built `cfg` with one intra-op thread: the latency
    axis of the frontier. One thread keeps it comparable between models on a machine that is also training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg)
    x = torch.randn(1, cfg.in_channels, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    ms = inference_latency_ms(model, x, threads=1, budget_s=budget_s)
    if not (math.isfinite(ms) and ms > 0):
        raise RuntimeError(f"latency measured as {ms} ms for {cfg.model}: the clock or the run is broken")
    return ms
