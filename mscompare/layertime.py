"""Measured forward time per layer on this CPU, beside its share of MACs and its GFLOP/s, cached per config."""
from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from mscompare.models import ModelConfig, build_model
from mscompare.profile import cached_profile, wait_for_prefetch
from mscompare.speed import torch_threads

BATCHES = (1, 128)  # batch 1 (latency) and the training batch
MAC_TYPES = ("Conv2d", "Linear")  # the layers whose MACs are "MACs" (profile.MAC_OPS)
MIN_REPS = 3
_CALIBRATE_CHILDREN = 16


def layer_kind(mod: nn.Module) -> str:
    """What a module is, for grouping: depthwise, pointwise and full convs apart, BN, ReLU, pooling, FC."""
    if isinstance(mod, nn.Conv2d):
        if mod.groups > 1 and mod.groups == mod.in_channels:
            return f"depthwise {mod.kernel_size[0]}x{mod.kernel_size[1]} conv"
        return "pointwise 1x1 conv" if mod.kernel_size == (1, 1) else f"{mod.kernel_size[0]}x{mod.kernel_size[1]} conv"
    if list(mod.children()):  # a module with its own forward code: what it computes between its layers
        merge = getattr(mod, "merge", None)
        own = {"MultiScale": f"{'concat' if merge == 'concat' else 'add'} + residual add", "Inception": "concat",
               "Net": "flatten + ReLU"}.get(type(mod).__name__, "own ops")
        return f"{own} (own ops)"
    return {"BatchNorm2d": "BatchNorm", "ReLU": "ReLU", "MaxPool2d": "max-pool", "Linear": "linear",
            "Identity": "identity"}.get(type(mod).__name__, type(mod).__name__)


def _has_own_forward(mod: nn.Module) -> bool:
    """A container whose forward does work of its own (cat, add, flatten), not only calls its children in turn."""
    return bool(list(mod.children())) and not isinstance(mod, (nn.Sequential, nn.ModuleList))


class _Hooks:
    """perf_counter around every module call. A leaf's time is its call; a container's own time is its call
    less its children's calls and less the hooks' own cost per child call (`gap_s`, measured by calibrate)."""

    def __init__(self, model: nn.Module):
        self.stack: list[list] = []  # [module, children's time, children's calls, start]
        self.total: dict[nn.Module, float] = {}
        self.own: dict[nn.Module, float] = {}
        self.calls: dict[nn.Module, int] = {}
        self.handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(self._pre),
                                                             m.register_forward_hook(self._post))]

    def _pre(self, mod, _inputs):
        self.stack.append([mod, 0.0, 0, time.perf_counter()])

    def _post(self, mod, _inputs, _output):
        t = time.perf_counter()
        _, child_s, child_calls, start = self.stack.pop()
        dt = t - start
        self.total[mod] = self.total.get(mod, 0.0) + dt
        self.own[mod] = self.own.get(mod, 0.0) + dt - child_s
        self.calls[mod] = self.calls.get(mod, 0) + child_calls
        if self.stack:
            self.stack[-1][1] += dt
            self.stack[-1][2] += 1

    def reset(self) -> None:
        self.total, self.own, self.calls = {}, {}, {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def calibrate_gap_s(reps: int = 15) -> float:
    """The time the hooks themselves add between a container's start and its children's calls, per child call:
    the own time of a chain of empty modules (median), divided by its length."""
    chain = nn.Sequential(*(nn.Identity() for _ in range(_CALIBRATE_CHILDREN)))
    hooks, x, gaps = _Hooks(chain), torch.zeros(1), []
    try:
        for _ in range(reps + 2):
            hooks.reset()
            chain(x)
            gaps.append(hooks.own[chain] / _CALIBRATE_CHILDREN)
    finally:
        hooks.remove()
    return statistics.median(gaps[2:])


@dataclass
class LayerTimes:
    """One measurement: `layers` (layer, type, kind, ms: median per forward at `batch`, summed over a module's calls
    in one forward), the whole forward's median without hooks (`forward_ms`) and with them (`hooked_ms`)."""

    config: ModelConfig
    batch: int
    threads: int
    layers: pd.DataFrame
    forward_ms: float
    hooked_ms: float
    reps: int


def measure(cfg: ModelConfig, batch: int, threads: int | None = 1, budget_s: float = 1.0,
            reps: int = 50) -> LayerTimes:
    """Time every leaf layer of a freshly built `cfg` (eval mode, inference_mode, random inputs), and the own ops of
    the modules that compute between their layers, with `threads` intra-op threads (None: as it is). Passes with
    and without hooks alternate until `budget_s` is spent (at least MIN_REPS each, at most `reps`)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG; leave it as it was
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    wait_for_prefetch(timeout=30.0)  # the page's background profiling would share the cores and the GIL
    named = [(n, m) for n, m in model.named_modules() if not list(m.children()) or _has_own_forward(m)]
    per_layer: dict[str, list[float]] = {n: [] for n, _ in named}
    plain, hooked = [], []
    with torch_threads(threads) as n_threads, torch.inference_mode():
        deadline = time.perf_counter() + budget_s
        model(x)  # warm-up: first-call allocations and oneDNN primitive creation
        gap = calibrate_gap_s()
        hooks = _Hooks(model)
        try:
            model(x)  # a first pass with the hooks on, untimed
            while len(plain) < reps:
                hooks.remove()  # plain pass first, hooks back on for the second: drift hits both alike
                t0 = time.perf_counter()
                model(x)
                plain.append(time.perf_counter() - t0)
                hooks = _Hooks(model)
                t0 = time.perf_counter()
                model(x)
                hooked.append(time.perf_counter() - t0)
                for n, m in named:
                    own = hooks.own.get(m, 0.0) - gap * hooks.calls.get(m, 0)
                    per_layer[n].append(hooks.total.get(m, 0.0) if not list(m.children()) else max(own, 0.0))
                hooks.reset()
                if len(plain) >= MIN_REPS and time.perf_counter() > deadline:
                    break
        finally:
            hooks.remove()
    rows = [{"layer": n if not list(m.children()) else own_row_name(n), "type": type(m).__name__,
             "kind": layer_kind(m), "ms": statistics.median(per_layer[n]) * 1e3} for n, m in named]
    forward_ms = statistics.median(plain) * 1e3
    if not (math.isfinite(forward_ms) and forward_ms > 0):
        raise RuntimeError(f"forward time measured as {forward_ms} ms for {cfg.model}: the clock or the run is broken")
    return LayerTimes(cfg, batch, n_threads, pd.DataFrame(rows), forward_ms, statistics.median(hooked) * 1e3,
                      len(plain))


def own_row_name(module_name: str) -> str:
    """The row of a container's own ops: 'units.0 (own ops)', '(own ops)' for the network itself."""
    return f"{module_name} (own ops)".strip()


_cache: dict[tuple, LayerTimes] = {}
_cache_lock = threading.Lock()
CACHE_SIZE = 256


def cached_measure(cfg: ModelConfig, batch: int, threads: int | None = 1, budget_s: float = 1.0,
                   fresh: bool = False) -> LayerTimes:
    """measure, kept per (config, batch, threads) for the life of the process; `fresh` measures again and keeps
    the new result."""
    key = (cfg, batch, threads)
    with _cache_lock:
        hit = None if fresh else _cache.get(key)
    if hit is not None:
        return hit
    lt = measure(cfg, batch, threads, budget_s)
    with _cache_lock:
        _cache[key] = lt
        while len(_cache) > CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
    return lt


def breakdown(cfg: ModelConfig, batches: tuple[int, ...] = BATCHES, threads: int | None = 1, budget_s: float = 1.0,
              fresh: bool = False) -> pd.DataFrame:
    """The MACs table of `cfg` (profile.cached_profile, same layer names and order) with, per batch b: ms_b<b>
    (median ms per forward of b images), time_share_b<b> (of the sum of every row's ms) and gflop_s_b<b>
    (2 x MACs x b / time, conv and linear layers). mac_share is of conv + linear MACs. Rows for the modules'
    own ops (concat, adds, flatten) follow the last layer of their module. Measured once per config and batch."""
    prof = cached_profile(cfg).layers
    out = prof.copy()
    is_mac = out["type"].isin(MAC_TYPES)
    out["mac_share"] = out["macs"].where(is_mac, 0) / out["macs"].where(is_mac, 0).sum()
    measured = {}
    for b in batches:
        lt = measured[b] = cached_measure(cfg, b, threads, budget_s, fresh)
        t = lt.layers.set_index("layer")
        if "kind" not in out:
            out = _with_own_rows(out, lt.layers)
            is_mac = out["type"].isin(MAC_TYPES)
        ms = out["layer"].map(t["ms"])
        out[f"ms_b{b}"] = ms
        out[f"time_share_b{b}"] = ms / ms.sum()
        out[f"gflop_s_b{b}"] = (2 * out["macs"] * b / (ms * 1e-3) / 1e9).where(is_mac)
    out.attrs.update({"threads": lt.threads, "model": cfg.model, "batches": list(batches),
                      "forward_ms": {b: m.forward_ms for b, m in measured.items()},
                      "hooked_ms": {b: m.hooked_ms for b, m in measured.items()}})
    return out


def _with_own_rows(prof: pd.DataFrame, timed: pd.DataFrame) -> pd.DataFrame:
    """The profile's rows plus `kind`, with each own-ops row placed after the last layer of its module."""
    kinds = timed.set_index("layer")["kind"]
    rows = prof.assign(kind=prof["layer"].map(kinds)).to_dict("records")
    for r in timed[timed["layer"].str.endswith("(own ops)")].itertuples():
        prefix = r.layer[: -len("(own ops)")].strip()
        inside = [i for i, x in enumerate(rows) if not prefix or x["layer"].startswith(prefix + ".")]
        at = (inside[-1] + 1) if inside else len(rows)
        rows.insert(at, {"layer": r.layer, "type": r.type, "params": 0, "macs": 0, "kind": r.kind,
                         "mac_share": 0.0})
    return pd.DataFrame(rows)


def by_kind(df: pd.DataFrame) -> pd.DataFrame:
    """A breakdown summed per kind of layer: MAC share and, per batch, time share and the ratio of the two."""
    cols = [c for c in df.columns if c.startswith("time_share_b")]
    g = df.groupby("kind", as_index=False)[["mac_share", *cols]].sum()
    for c in cols:
        g[f"time_over_macs_{c.removeprefix('time_share_')}"] = g[c] / g["mac_share"].where(g["mac_share"] > 0)
    return g.sort_values(cols[-1] if cols else "mac_share", ascending=False, ignore_index=True)


def estimate_s(cfg: ModelConfig, batches: tuple[int, ...] = BATCHES, budget_s: float = 1.0,
               gflop_s: float = 3.0) -> float:
    """Seconds a breakdown will take, before it starts: the budget per batch, or the minimum passes (plain and
    hooked, MIN_REPS each, plus warm-up) at `gflop_s` where a model is slower than that."""
    macs = cached_profile(cfg).macs
    return sum(max(budget_s, (2 * MIN_REPS + 2) * 2 * macs * b / (gflop_s * 1e9)) for b in batches)


def table_text(df: pd.DataFrame) -> str:
    """A breakdown as text: the layer table, then the kinds of layer by time share, and how the rows add up."""
    batches = df.attrs.get("batches", [])
    cols = ["layer", "kind", "macs", "mac_share"] + [c for b in batches
                                                     for c in (f"ms_b{b}", f"time_share_b{b}", f"gflop_s_b{b}")]
    fmt = {c: "{:.1%}".format for c in cols if "share" in c}
    fmt.update({c: "{:.3f}".format for c in cols if c.startswith("ms_")})
    fmt.update({c: "{:.2f}".format for c in cols if c.startswith("gflop_s")})
    lines = [df[cols].to_string(index=False, formatters=fmt, na_rep="")]
    kinds = by_kind(df)
    kfmt = {c: "{:.1%}".format for c in kinds.columns if "share" in c}
    kfmt.update({c: "{:.2f}".format for c in kinds.columns if c.startswith("time_over")})
    lines += ["", "by kind of layer (time_over_macs > 1: more of the time than of the MACs):",
              kinds.to_string(index=False, formatters=kfmt, na_rep="")]
    for b in batches:
        lines.append(f"batch {b}: rows sum to {df[f'ms_b{b}'].sum():.3f} ms; the whole forward without hooks "
                     f"{df.attrs['forward_ms'][b]:.3f} ms, with them {df.attrs['hooked_ms'][b]:.3f} ms")
    return "\n".join(lines)


def header(df: pd.DataFrame) -> str:
    """One line saying what a breakdown measured and how."""
    n = df.attrs["threads"]
    return (f"{df.attrs['model']}: forward time per layer on this CPU ({n} thread{'s' * (n > 1)}, eval mode, "
            f"median ms per forward of a batch of {' and of '.join(map(str, df.attrs['batches']))} random images); "
            "shares of the sum of all rows; MACs per image (fvcore, conv + linear); GFLOP/s = 2 x MACs x batch / time")


def as_json(df: pd.DataFrame) -> dict:
    """A breakdown as plain JSON-able data: what was measured, and one record per row (null where none)."""
    import json

    a = df.attrs
    return {"model": a["model"], "batches": a["batches"], "threads": a["threads"],
            "forward_ms": {str(b): v for b, v in a["forward_ms"].items()},
            "hooked_ms": {str(b): v for b, v in a["hooked_ms"].items()},
            "layers": json.loads(df.to_json(orient="records"))}
