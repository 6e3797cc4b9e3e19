"""Owns the throughput benchmark: our trainer vs a plain torchvision/PIL/DataLoader baseline, alternating."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

from bench import harness
from mscompare import MODELS, build_model, config_for
from mscompare.data import Batches, load_dataset
from mscompare.profile import profile_model
from mscompare.train import preset, train


class PILArrays(VisionDataset):
    """What torchvision's MNIST/CIFAR10 classes do per item: uint8 array -> PIL image -> transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        super().__init__(root=None, transform=transform)
        self.x, self.y = (x[..., 0] if x.shape[-1] == 1 else x), y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def baseline_loader(data, mean, std, shuffle=True, batch_size=128):
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return DataLoader(PILArrays(data.x.numpy(), data.y.numpy(), tf), batch_size=batch_size, shuffle=shuffle)


def baseline_train(cfg, tcfg, train_data, test_data=None, device="cpu") -> float:
    """A straightforward loop: NCHW model, DataLoader, default settings, each batch moved to `device` per step.
    Returns images/s, leaving out two warm-up steps and the evaluations."""
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    mean, std = train_data.mean_std()
    it, t_train, start = 0, 0.0, None
    while it < tcfg.iters:
        for x, y in baseline_loader(train_data, mean, std):
            if it == 2:
                start = time.perf_counter()
            model.train()
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
            if test_data is not None and it % tcfg.eval_every == 0:
                t_train += time.perf_counter() - start
                model.eval()
                with torch.no_grad():
                    [model(xb.to(device)) for xb, _ in baseline_loader(test_data, mean, std, False, 1000)]
                start = time.perf_counter()
            if it >= tcfg.iters:
                break
    if device != "cpu":
        torch.cuda.synchronize()
    t_train += time.perf_counter() - start
    return (tcfg.iters - 2) * tcfg.batch_size / t_train


def matmul_gflops(dtype=torch.float32, n=2048, reps=10, device="cpu") -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def dw_layout_speedup(channels=64, size=16, batch=128, reps=20) -> float:
    """Forward+backward of a 3x3 depthwise conv: NCHW time / channels_last time."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    times = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        c = conv.to(memory_format=fmt)
        x = torch.randn(batch, channels, size, size).to(memory_format=fmt).requires_grad_()
        c(x).sum().backward()
        t = time.perf_counter()
        for _ in range(reps):
            c(x).sum().backward()
        times.append(time.perf_counter() - t)
    return times[0] / times[1]


def pipeline_rates(data, batches=50) -> tuple[float, float]:
    """Images/s of batch production alone: our in-memory uint8 pipeline vs the PIL DataLoader."""
    mean, std = data.mean_std()
    it = Batches(data, mean, std, torch.device("cpu")).train_batches(128)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    ours = batches * 128 / (time.perf_counter() - t)
    loader = iter(baseline_loader(data, mean, std))
    t = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return ours, batches * 128 / (time.perf_counter() - t)


def cli_rate(model, dataset, root, iters, threads) -> float:
    """images/s of one `mscompare train` process (so malloc and thread settings are its own)."""
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as runs:
        cmd = [sys.executable, "-m", "mscompare", "train", "--model", model, "--dataset", dataset, "--data-root",
               root, "--iters", str(iters), "--eval-every", str(iters), "--threads", str(threads), "--json",
               "--runs-dir", runs]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=harness.REPO).stdout
    return json.loads(out.splitlines()[-1])["images_per_s"]


def process_ab(rep, model, dataset, root, iters, rounds) -> None:
    """Two 1-thread processes side by side vs one 2-thread process (the run manager's default concurrency)."""
    def pair(_r: int) -> float:
        with ThreadPoolExecutor(2) as ex:
            return sum(ex.map(lambda _: cli_rate(model, dataset, root, iters, 1), range(2)))

    r = harness.alternate(rounds, {"one": lambda _r: cli_rate(model, dataset, root, iters, 2), "pair": pair})
    one, two = statistics.median(r["one"]), statistics.median(r["pair"])
    rep.say(f"{model} on {dataset}, separate processes: two 1-thread runs side by side {two:.0f} img/s in total "
            f"vs one 2-thread run {one:.0f} ({two / one:.2f}x)")


def compile_ab(rep, models, dataset, steps=20) -> None:
    """Training-step images/s of our channels_last model, eager vs torch.compile (inductor), same process.
    Compile time is reported separately and left out of the rate."""
    shape = (1, 28) if dataset == "mnist" else (3, 32)
    x = torch.randn(128, shape[0], shape[1], shape[1]).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    for m in models:
        rates, warm = {}, {}
        for mode in ("eager", "compiled"):
            torch._dynamo.reset()  # all models share Net.forward; don't hit dynamo's recompile limit
            torch.manual_seed(0)
            model = build_model(config_for(m, dataset)).to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            fwd = torch.compile(model) if mode == "compiled" else model

            def step():
                loss = F.cross_entropy(fwd(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            t = time.perf_counter()
            step(), step()
            warm[mode] = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(steps):
                step()
            rates[mode] = steps * 128 / (time.perf_counter() - t)
        rep.say(f"{dataset:8} {m:10} eager {rates['eager']:5.0f} img/s, torch.compile {rates['compiled']:5.0f} "
                f"img/s ({rates['compiled'] / rates['eager']:.2f}x; first two steps {warm['compiled']:.0f} s "
                "to compile)")


def main() -> int:
    ap = harness.parser(__doc__, data_root=True)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=1, help="baseline/ours pairs per model, alternating order (median)")
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--job", action="store_true", help="also time all five models under the quick preset")
    ap.add_argument("--process-ab", action="store_true", help="also A/B 2x1 vs 1x2 threads in separate processes")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both sides train")
    ap.add_argument("--compile-ab", action="store_true", help="only A/B eager vs torch.compile training steps")
    a = ap.parse_args()
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("throughput: --device cuda, but no CUDA GPU is available here")
    rep = harness.Report(a)
    rep.say(f"{torch.get_num_threads()} threads, device {dev}")
    if a.compile_ab:
        for d in a.datasets:
            compile_ab(rep, a.models, d)
        rep.write()
        return 0
    peak = matmul_gflops(device=dev, n=8192 if dev == "cuda" else 2048)
    rep.say(f"{dev}: fp32 matmul {peak:.0f} GFLOP/s (the ceiling below); bf16 matmul "
            f"{matmul_gflops(torch.bfloat16, n=8192 if dev == 'cuda' else 512, reps=2, device=dev):.1f} GFLOP/s")
    rep.say(f"depthwise 3x3 fwd+bwd, channels_last vs NCHW: {dw_layout_speedup():.2f}x faster")
    roots = {d: harness.data_root(a.data_root, d) for d in a.datasets}
    data = {d: load_dataset(d, roots[d]) for d in a.datasets}
    for d in a.datasets:
        ours, base = pipeline_rates(data[d][0])
        rep.say(f"batch pipeline alone, {d}: ours {ours:,.0f} img/s, PIL DataLoader {base:,.0f} img/s")
    rep.say(f"\n{'dataset':8} {'model':10} {'baseline img/s':>15} {'ours img/s':>11} {'ratio':>6} {'GFLOP/s':>8} "
            f"{'of fp32 peak':>12}")
    ratios = []
    for d in a.datasets:
        tr, te = data[d]
        for m in a.models:
            cfg = config_for(m, d)

            def ours(_r: int) -> float:
                train(cfg, preset("paper", d, iters=3, eval_every=3, eval_subset=200, device=dev), tr, te)  # warm-up
                tcfg = preset("paper", d, iters=a.iters, eval_every=a.iters, eval_subset=200, device=dev)
                return train(cfg, tcfg, tr, te)["images_per_s"]

            r = harness.alternate(a.rounds, {"baseline": lambda _r: baseline_train(
                cfg, preset("paper", d, iters=a.iters, eval_every=a.iters), tr, device=dev), "ours": ours})
            base, own = statistics.median(r["baseline"]), statistics.median(r["ours"])
            gf = 6 * profile_model(cfg).macs * own / 1e9  # forward + backward ~ 3 x forward, 2 FLOPs per MAC
            ratios.append(own / base)
            rep.say(f"{d:8} {m:10} {base:15.0f} {own:11.0f} {own / base:6.2f} {gf:8.1f} {gf / peak:12.1%}")
    rep.say(f"min ratio {min(ratios):.2f}, geometric mean {statistics.geometric_mean(ratios):.2f}")
    if a.job:
        d = a.datasets[0]
        tr, te = data[d]

        def job(side: str) -> float:
            t = time.perf_counter()
            for m in a.models:
                if side == "baseline":
                    baseline_train(config_for(m, d), preset("quick", d), tr, te.stratified(2000), device=dev)
                else:
                    train(config_for(m, d), preset("quick", d, device=dev), tr, te)
            return time.perf_counter() - t

        r = harness.alternate(a.rounds, {"baseline": lambda _r: job("baseline"), "ours": lambda _r: job("ours")})
        tb, to = statistics.median(r["baseline"]), statistics.median(r["ours"])
        rep.say(f"\nwhole job, five models x quick preset on {d}: baseline {tb:.0f} s, ours {to:.0f} s "
                f"({tb / to:.2f}x)")
    if a.process_ab:
        rep.say()
        for m in ("alexnet", "ms_add"):
            process_ab(rep, m, a.datasets[0], roots[a.datasets[0]], max(a.iters, 60), a.rounds)
    rep.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
