"""bf16 autocast against fp32: training images/s through train() itself, and what the `auto` probe sees.

    python bench/precision.py [--data-root ../shared/datasets] [--iters 60] [--rounds 2] [--threads 1]
        [--models ...] [--datasets mnist cifar10] [--device cpu|cuda] [--out docs/bench-precision.txt]

Per model and dataset shape, fp32 and bf16 runs alternate (--rounds pairs, order flipped each round) in this
one process, so machine drift hits both. images/s leaves out warm-up and evaluation (train()'s own measure);
the optimizer step is included, as in real training. The probe column is train.step_times, the forward +
backward probe `auto` uses, measured beside it: the two ratios should agree on which precision is faster.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mscompare import MODELS, build_model, config_for  # noqa: E402
from mscompare.data import load_dataset  # noqa: E402
from mscompare.train import preset, step_times, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_throughput import machine_info  # noqa: E402 - date, CPU model and ISA flags, torch, load, commit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default="", help="also write the report here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = [f"# bench/precision.py --iters {a.iters} --rounds {a.rounds} --threads {a.threads} --device {a.device}",
             *machine_info(), "",
             f"{'dataset':8} {'model':10} {'fp32 img/s':>10} {'bf16 img/s':>10} {'train bf16/fp32':>15} "
             f"{'probe bf16/fp32':>15}  rounds (bf16/fp32)"]
    print("\n".join(lines), flush=True)
    ratios = []
    for d in a.datasets:
        tr, te = load_dataset(d, a.data_root)
        te = te.stratified(200)
        for m in a.models:
            mcfg = config_for(m, d)
            rate = {"fp32": [], "bf16": []}
            for r in range(a.rounds + 1):  # round 0 warms up both
                for p in (("fp32", "bf16") if r % 2 else ("bf16", "fp32")):
                    tcfg = preset("paper", d, iters=a.iters if r else 5, eval_every=10**6, device=a.device,
                                  precision=p)
                    res = train(mcfg, tcfg, tr, te)
                    if r:
                        rate[p].append(res["images_per_s"])
            model = build_model(mcfg).to(a.device, memory_format=torch.channels_last)
            x = torch.randn(128, mcfg.in_channels, mcfg.input_size, mcfg.input_size, device=a.device)
            probe = step_times(model, x.contiguous(memory_format=torch.channels_last),
                               torch.randint(mcfg.num_classes, (128,), device=a.device))
            f, b = statistics.mean(rate["fp32"]), statistics.mean(rate["bf16"])
            per_round = ", ".join(f"{y / x_:.2f}" for x_, y in zip(rate["fp32"], rate["bf16"]))
            ratios.append(b / f)
            line = (f"{d:8} {m:10} {f:10.0f} {b:10.0f} {b / f:14.2f}x {probe['fp32'] / probe['bf16']:14.2f}x"
                    f"  {per_round}")
            lines.append(line)
            print(line, flush=True)
    lines.append(f"\nbf16/fp32 training images/s: min {min(ratios):.2f}x, max {max(ratios):.2f}x, geometric mean "
                 f"{statistics.geometric_mean(ratios):.2f}x")
    print(lines[-1])
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
