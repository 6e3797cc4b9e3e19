"""Owns the GPU check: environment, cuda tests, failure probes, throughput, lever A/Bs and fidelity on a GPU."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Only torch, numpy, safetensors and tqdm are needed: a lent GPU machine may lack fvcore, which nothing here imports.
from bench import harness
from mscompare.config import TrainConfig, config_for
from mscompare.data import ArrayData
from mscompare.models import build_model, list_units
from mscompare.train import train

ROOT = harness.REPO
SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}


class Sections:
    """The markdown report, each section appended as soon as it is done, so a timeout still leaves the earlier ones."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                        "Written by `bench/gpu_check.sh`, section by section.\n")

    def section(self, title: str, body: str) -> None:
        with self.path.open("a") as f:
            f.write(f"\n## {title}\n\n{body.rstrip()}\n")
        print(f"== {title}\n{body}", flush=True)


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def environment() -> str:
    p = torch.cuda.get_device_properties(0)
    rows = {"gpu": p.name, "memory GiB": round(p.total_memory / 2**30, 1), "SMs": p.multi_processor_count,
            "torch": torch.__version__, "CUDA": torch.version.cuda, "cuDNN": torch.backends.cudnn.version(),
            "python": sys.version.split()[0], "TF32 matmul": torch.backends.cuda.matmul.allow_tf32,
            "TF32 cuDNN": torch.backends.cudnn.allow_tf32, "cudnn.benchmark": torch.backends.cudnn.benchmark}
    a = torch.randn(8192, 8192, device="cuda")
    for name, dt in (("fp32 matmul TFLOP/s", torch.float32), ("bf16 matmul TFLOP/s", torch.bfloat16)):
        x = a.to(dt)
        x @ x
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            x @ x
        torch.cuda.synchronize()
        rows[name] = round(5 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12, 1)
    return "\n".join(f"- {k}: {v}" for k, v in rows.items())


def run_tests() -> str:
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-p",
                        "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return "```\n" + "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:]) + "\n```"


def probes(tmp: Path) -> str:
    """Through the app's run manager (worker processes): a bad-label run, an OOM run, then a good run."""
    from mscompare.manager import RunManager
    from mscompare.runs import RunStore

    rng = np.random.default_rng(0)
    for name, n, bad in (("badlabels", 512, True), ("good", 512, False), ("big", 32768, False)):
        d = tmp / name
        d.mkdir(parents=True, exist_ok=True)
        y = np.arange(n) % 4
        if bad:
            y[-1] = 99
        np.savez(d / "train.npz", x=rng.integers(0, 255, (n, 28, 28, 1), dtype=np.uint8), y=y)
        np.savez(d / "test.npz", x=rng.integers(0, 255, (64, 28, 28, 1), dtype=np.uint8), y=np.arange(64) % 4)
        (d / "classes.txt").write_text("a\nb\nc\nd\n")
    store = RunStore(tmp / "runs")
    mgr = RunManager(store, concurrency=1)
    small = config_for("ms_add", "x", width=8, in_channels=1, input_size=28, num_classes=4)
    huge = config_for("alexnet", "x", units=1, width=512, in_channels=1, input_size=28, num_classes=4)
    base = dict(data_root=str(tmp), iters=30, eval_every=10, device="cuda")
    ids = [("bad label", mgr.add(small, TrainConfig(dataset="badlabels", **base))),
           ("good after it", mgr.add(small, TrainConfig(dataset="good", **base))),
           ("out of memory", mgr.add(huge, TrainConfig(dataset="big", batch_size=32768, **{**base, "iters": 2}))),
           ("good after it", mgr.add(small, TrainConfig(dataset="good", **base)))]
    mgr.wait(timeout=240)
    rows = [{"probe": what, "status": store.get(r)["status"], "message": (store.get(r)["message"] or "")[:120]}
            for what, r in ids]
    from mscompare.jobs import execute  # the same in one process: is the CUDA context still usable after OOM?

    r1 = store.create(huge, TrainConfig(dataset="big", batch_size=32768, **{**base, "iters": 2}))
    r2 = store.create(small, TrainConfig(dataset="good", **base))
    rows += [{"probe": "in-process OOM", "status": execute(store, r1)["status"], "message": ""},
             {"probe": "in-process good after it", "status": execute(store, r2)["status"], "message": ""}]
    return table(rows)


def synthetic(shape: tuple[int, int], n: int = 8192) -> ArrayData:
    c, s = shape
    g = torch.Generator().manual_seed(0)
    return ArrayData(torch.randint(0, 256, (n, s, s, c), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])


def throughput(iters: int) -> str:
    """img/s of train() itself (paper preset, batch 128, after warm-up), on synthetic data of each shape."""
    rows = []
    for ds, shape in SHAPES.items():
        data = synthetic(shape)
        for m in list_units():
            cfg = TrainConfig(dataset=ds, iters=iters, eval_every=iters, eval_subset=0, device="cuda")
            res = train(config_for(m, ds), cfg, data, synthetic(shape, 1000))
            rows.append({"dataset shape": ds, "model": m, "img/s": f"{res['images_per_s']:,.0f}"})
    return table(rows)


def step_rate(model_name: str, ds: str, fused=True, bench=False, bf16=False, channels_last=True,
              iters: int = 300) -> float:
    """img/s of the bare training step with one lever changed (same data each step, synced at the end)."""
    torch.backends.cudnn.benchmark = bench
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_model(config_for(model_name, ds)).cuda().to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), 1e-3, fused=fused, foreach=None if fused else False)
    c, s = SHAPES[ds]
    x = torch.randn(128, c, s, s, device="cuda").contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (128,), device="cuda")
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else nullcontext
    for i in range(iters + 20):
        if i == 20:
            torch.cuda.synchronize()
            t = time.perf_counter()
        with ctx():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    torch.backends.cudnn.benchmark = False
    return iters * 128 / (time.perf_counter() - t)


def levers() -> str:
    rows = []
    for m in ("alexnet", "ms_add"):
        for ds in SHAPES:
            base = step_rate(m, ds)
            row = {"model": m, "shape": ds, "baseline img/s": f"{base:,.0f}"}
            for name, kw in (("foreach Adam (not fused)", {"fused": False}), ("cudnn.benchmark", {"bench": True}),
                             ("bf16 autocast", {"bf16": True}), ("NCHW (not channels_last)", {"channels_last": False})):
                row[name] = f"{step_rate(m, ds, **kw) / base:.2f}x"
            rows.append(row)
    return ("Baseline: fused Adam, channels_last, fp32, cudnn.benchmark off (train()'s CUDA settings). "
            "Each column changes one lever; >1 is faster.\n\n" + table(rows))


def fidelity(data_root: str, iters: int, runs_dir: Path) -> str:
    """alexnet and ms_add on real MNIST with the paper preset, beside the shipped (CPU-trained) checkpoints."""
    if not (Path(data_root) / "mnist" / "train.npz").exists():
        return f"skipped: no mnist/train.npz under {data_root} (pass --data-root)"
    manifest = {e["model"]: e for e in json.loads((ROOT / "checkpoints" / "manifest.json").read_text())
                if e["dataset"] == "mnist"}
    procs = {m: subprocess.Popen([sys.executable, "-m", "mscompare", "train", "--model", m, "--dataset", "mnist",
                                  "--data-root", data_root, "--iters", str(iters), "--device", "cuda",
                                  "--runs-dir", str(runs_dir), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in ("alexnet", "ms_add")}
    rows = []
    for m, p in procs.items():
        out, err = p.communicate(timeout=600)
        last = json.loads(out.strip().splitlines()[-1]) if p.returncode == 0 else {}
        rows.append({"model": m, "iters": iters, "GPU test acc": last.get("test_acc", err.strip()[-100:]),
                     "shipped CPU acc": manifest.get(m, {}).get("test_acc"),
                     "GPU img/s": last.get("images_per_s"), "seconds": last.get("seconds")})
    return ("The shipped ms_add checkpoint predates the residual BatchNorm (ARCHITECTURE.md); alexnet is unchanged.\n\n"
            + table(rows))


def main() -> int:
    ap = harness.parser(__doc__, out=str(ROOT / "docs" / "gpu-check.md"), wait_quiet_s=None, data_root=True)
    ap.add_argument("--throughput-iters", type=int, default=300)
    ap.add_argument("--fidelity-iters", type=int, default=5000)
    ap.add_argument("--runs-dir", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; nothing to check.")
        return 0
    rep = Sections(Path(a.out))
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for title, fn in (("1. Environment", environment), ("2. Tests (cuda mark)", run_tests),
                      ("3. Failure probes", lambda: probes(tmp)),
                      ("4. Throughput (paper preset, batch 128)", lambda: throughput(a.throughput_iters)),
                      ("5. Lever A/Bs", levers),
                      ("6. Fidelity on real MNIST", lambda: fidelity(harness.data_root(a.data_root, "mnist"),
                                                                     a.fidelity_iters,
                                                                     Path(a.runs_dir or tmp / "fidelity")))):
        t = time.perf_counter()
        try:
            body = fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
            body = f"failed: {type(e).__name__}: {e}"
        rep.section(title, f"{body}\n\n({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
