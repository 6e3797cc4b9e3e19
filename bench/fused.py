"""Fused seeds against separate runs: total training images/s of a K-seed job, per unit type and dataset shape.

    python bench/fused.py [--ks 1 2 4 8] [--steps 10] [--rounds 2] [--units ...] [--datasets mnist cifar10]
        [--device cpu|cuda] [--out docs/bench-fused.txt]

On random batches of the dataset's shape (batch 128, the paper preset's Adam), per unit, shape and K:
  fused     one process, all cores, the K seeds as one widened model (mscompare.fused._Stack);
  separate  today's best way to run K separate runs here: min(K, cores) worker processes side by side, one
            thread each (the auto thread policy's choice for two runs on two cores), splitting the K runs.
Both train `--steps` steps per run after a warm-up step; they alternate (--rounds pairs, order flipped each
round) so machine drift hits both. Reported: total images/s over the K runs and the job's wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

from app_throughput import machine_info  # date, CPU model and ISA flags, torch, load, commit
from mscompare.config import config_for, preset
from mscompare.fused import _Stack
from mscompare.models import build_model, list_units
from mscompare.train import make_optimizer

BATCH = 128


def _batches(mcfg, runs: int, device: str):
    shape = (runs, BATCH, mcfg.in_channels, mcfg.input_size, mcfg.input_size)
    g = torch.Generator().manual_seed(0)
    return (torch.randn(shape, generator=g).to(device),
            torch.randint(mcfg.num_classes, shape[:2], generator=g).to(device))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fused_job(mcfg, cfg, k: int, steps: int, device: str) -> float:
    """Seconds for `steps` fused steps of k seeds (after one warm-up step)."""
    models = []
    for s in range(k):
        torch.manual_seed(s)
        models.append(build_model(mcfg).to(device, memory_format=torch.channels_last))
    stack = _Stack(models, cfg)
    xs, ys = _batches(mcfg, k, device)
    stack.step(stack.losses(xs, ys, 0.0, contextlib.nullcontext))
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        stack.step(stack.losses(xs, ys, 0.0, contextlib.nullcontext))
    _sync(device)
    return time.perf_counter() - t


def separate_runs(mcfg, cfg, runs: int, steps: int, device: str, threads: int) -> float:
    """Seconds for `runs` separate runs of `steps` steps each, one after another, in this process."""
    torch.set_num_threads(threads)
    x, y = _batches(mcfg, 1, device)
    x = x[0].contiguous(memory_format=torch.channels_last)
    total = 0.0
    for s in range(runs):
        torch.manual_seed(s)
        model = build_model(mcfg).to(device, memory_format=torch.channels_last)
        opt = make_optimizer(list(model.parameters()), cfg)[0]
        for i in range(steps + 1):
            if i == 1:
                _sync(device)
                t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y[0]).backward()
            opt.step()
        _sync(device)
        total += time.perf_counter() - t
    return total


def _worker(args, out):
    out.put(separate_runs(*args))


def separate_job(mcfg, cfg, k: int, steps: int, device: str, cores: int) -> float:
    """Wall seconds of k separate runs split over min(k, cores) processes of one thread each, side by side."""
    procs = min(k, cores) if device == "cpu" else 1
    share = [k // procs + (i < k % procs) for i in range(procs)]
    if procs == 1:
        return separate_runs(mcfg, cfg, k, steps, device, cores if device == "cpu" and k == 1 else 1)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=((mcfg, cfg, n, steps, device, 1), out)) for n in share]
    for p in ps:
        p.start()
    times = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return max(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--units", nargs="+", default=list_units())
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default="", help="also write the report here")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    lines = machine_info() + [f"fused vs separate, batch {BATCH}, {a.steps} steps per run after a warm-up step, "
                              f"{a.rounds} alternating rounds (median), device {a.device}", ""]
    print("\n".join(lines), flush=True)
    for ds in a.datasets:
        cfg = preset("paper", ds, device=a.device)
        for unit in a.units:
            mcfg = config_for(unit, ds)
            for k in a.ks:
                fused, sep = [], []
                for r in range(a.rounds):
                    order = (("f", "s") if r % 2 == 0 else ("s", "f"))
                    for which in order:
                        if which == "f":
                            torch.set_num_threads(cores if a.device == "cpu" else 1)
                            fused.append(fused_job(mcfg, cfg, k, a.steps, a.device))
                        else:
                            sep.append(separate_job(mcfg, cfg, k, a.steps, a.device, cores))
                f, s = statistics.median(fused), statistics.median(sep)
                imgs = k * a.steps * BATCH
                line = (f"{ds:8s} {unit:10s} K={k}: fused {imgs / f:7.0f} img/s ({f:6.2f} s), separate "
                        f"{imgs / s:7.0f} img/s ({s:6.2f} s): fused/separate {s / f:.2f}x")
                print(line, flush=True)
                lines.append(line)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("# python bench/fused.py " + " ".join(os.sys.argv[1:]) + "\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
