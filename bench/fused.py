"""Owns the fused-seeds benchmark: total training images/s of a K-seed job, fused into one model vs separate runs."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

from bench import harness
from mscompare.config import config_for, preset
from mscompare.fused import _Stack
from mscompare.models import build_model, list_units
from mscompare.train import make_optimizer

BATCH = 128


def _batches(mcfg, runs: int, device: str):
    """Random batches of the dataset's shape, one per run, the same every step."""
    shape = (runs, BATCH, mcfg.in_channels, mcfg.input_size, mcfg.input_size)
    g = torch.Generator().manual_seed(0)
    return (torch.randn(shape, generator=g).to(device),
            torch.randint(mcfg.num_classes, shape[:2], generator=g).to(device))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fused_job(mcfg, cfg, k: int, steps: int, device: str) -> float:
    """Seconds for `steps` steps of the k seeds as one widened model (mscompare.fused._Stack), after a warm-up step."""
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
    """Seconds for `runs` separate runs of `steps` steps each (after a warm-up step), one after another here."""
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


def _worker(args, out) -> None:
    out.put(separate_runs(*args))


def separate_job(mcfg, cfg, k: int, steps: int, device: str, cores: int) -> float:
    """Wall seconds of k separate runs split over min(k, cores) processes of one thread each, side by side (the
    auto thread policy's choice for two runs on two cores); a run alone gets all cores, and a GPU one process."""
    procs = min(k, cores) if device == "cpu" else 1
    if procs == 1:
        return separate_runs(mcfg, cfg, k, steps, device, cores if device == "cpu" and k == 1 else 1)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=((mcfg, cfg, k // procs + (i < k % procs), steps, device, 1), out))
          for i in range(procs)]
    for p in ps:
        p.start()
    times = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return max(times)


def main() -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8], help="seeds per job")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run, after a warm-up step")
    ap.add_argument("--rounds", type=int, default=2, help="fused/separate pairs, alternating order (median)")
    ap.add_argument("--units", nargs="+", default=list_units())
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], help="the shapes of the random batches")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    rep = harness.Report(a)
    rep.say(f"fused vs separate, batch {BATCH}, {a.steps} steps per run after a warm-up step, {a.rounds} "
            f"alternating rounds (median), device {a.device}")
    rep.say()
    for ds in a.datasets:
        cfg = preset("paper", ds, device=a.device)
        for unit in a.units:
            mcfg = config_for(unit, ds)
            for k in a.ks:
                def fused(_r: int) -> float:
                    torch.set_num_threads(cores if a.device == "cpu" else 1)
                    return fused_job(mcfg, cfg, k, a.steps, a.device)

                t = harness.alternate(a.rounds, {"fused": fused, "separate": lambda _r: separate_job(
                    mcfg, cfg, k, a.steps, a.device, cores)})
                f, s = statistics.median(t["fused"]), statistics.median(t["separate"])
                imgs = k * a.steps * BATCH
                rep.say(f"{ds:8s} {unit:10s} K={k}: fused {imgs / f:7.0f} img/s ({f:6.2f} s), separate "
                        f"{imgs / s:7.0f} img/s ({s:6.2f} s): fused/separate {s / f:.2f}x")
    rep.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
