"""Parameter and MAC counts with fvcore: per model, per layer, and the all-models comparison table."""
from __future__ import annotations

import atexit
import functools
import threading
from collections import Counter
from dataclasses import dataclass, field

import warnings

import pandas as pd
import torch

with warnings.catch_warnings():  # fvcore's import scripts a helper with the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis, parameter_count
    from fvcore.nn.jit_analysis import _IGNORED_OPS  # the ops fvcore skips without a warning (pinned version)

from mscompare.config import config_for
from mscompare.models import ModelConfig, build_model, count_params, list_units, unit_params, uses_expand

MAC_OPS = ("conv", "linear", "addmm", "matmul")  # what "MACs" means here: multiply-adds of conv and FC layers
COUNTED = {"aten::_convolution", "aten::conv2d", "aten::linear", "aten::addmm", "aten::matmul", "aten::batch_norm"}
NO_COMPUTE = {"aten::flatten", "aten::size", "aten::view", "aten::reshape", "aten::Int", "aten::t", "aten::contiguous"}


def skipped_ops(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Every op in the traced graph that fvcore does not count, with how often it runs: the ones it warns
    about (add, max_pool2d) and the ones it ignores silently (relu, cat). A separate trace: profile_model
    gets the same from fvcore's own pass."""
    from collections import Counter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(model, x, check_trace=False).inlined_graph
    kinds = Counter(n.kind() for n in graph.nodes() if n.kind().startswith("aten::"))
    return {k: v for k, v in sorted(kinds.items()) if k not in COUNTED | NO_COMPUTE}


def _count_ignored(fca: FlopCountAnalysis) -> Counter:
    """Make the ops fvcore ignores silently (relu, cat...) visible: each gets a handle that counts its calls
    and adds no MACs, so one trace gives both the counts and the list of what is not counted."""
    seen: Counter = Counter()
    for op in sorted(_IGNORED_OPS - NO_COMPUTE):
        fca.set_op_handle(op, lambda inputs, outputs, op=op: seen.update([op]) or 0)
    return seen


@dataclass
class Profile:
    """fvcore's result for one model. `macs`: conv + linear multiply-adds per image (one fused multiply-add
    counts once), `other_macs`: what fvcore counts for other ops (BatchNorm), `uncounted_ops`: the ops fvcore
    skips (relu, cat, add, max_pool...) with how often each runs."""

    config: ModelConfig
    params: int
    unit_params: int
    macs: int
    layers: pd.DataFrame
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    other_macs: dict[str, int] = field(default_factory=dict)


def profile_model(cfg: ModelConfig) -> Profile:
    """Count params and MACs per image for `cfg`, per layer too; ops fvcore can't count are listed, not warned."""
    model = build_model(cfg).eval()
    x = torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size)
    fca = FlopCountAnalysis(model, x)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    ignored = _count_ignored(fca)
    by_module = fca.by_module()
    params = parameter_count(model)
    rows = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):  # leaf layers only
            rows.append({"layer": name, "type": type(mod).__name__, "params": params.get(name, 0),
                         "macs": by_module.get(name, 0)})
    layers = pd.DataFrame(rows, columns=["layer", "type", "params", "macs"])
    by_op = fca.by_operator()
    macs = sum(int(by_op.get(op, 0)) for op in MAC_OPS)
    other = {op: int(n) for op, n in by_op.items() if op not in MAC_OPS and n}
    uncounted = {k: v for k, v in sorted((fca.unsupported_ops() + ignored).items()) if k not in COUNTED | NO_COMPUTE}
    return Profile(cfg, count_params(model), unit_params(cfg), macs, layers, uncounted, other)


@functools.lru_cache(maxsize=2048)
def cached_profile(cfg: ModelConfig) -> Profile:
    """profile_model, kept per config for the life of the process (a Profile is read, never changed)."""
    return profile_model(cfg)


def compare(dataset: str = "mnist", units: int | None = None, width: int = 32, expand: int = 1) -> pd.DataFrame:
    """One row per registered model: params, unit params, MACs per image, and ratios to mobilenet.
    `units` None gives each model the paper's count for the dataset (GoogLeNet: 2 on CIFAR-10); `expand` (N/C)
    applies to the units that have an expansion (models.uses_expand), the others show expand 1."""
    rows = []
    for name in list_units():
        e = expand if uses_expand(name) else 1
        p = cached_profile(config_for(name, dataset, units=units, width=width, expand=e))
        rows.append({"model": name, "units": p.config.units, "expand": e, "params": p.params,
                     "unit_params": p.unit_params,
                     "macs": p.macs, "bn_macs": sum(p.other_macs.values()),
                     "uncounted_ops": ", ".join(sorted(p.uncounted_ops))})
    df = pd.DataFrame(rows)
    base = df.set_index("model").loc["mobilenet"]
    df["unit_ratio"] = (df["unit_params"] / base["unit_params"]).round(2)
    df["params_ratio"] = (df["params"] / base["params"]).round(2)
    df["macs_ratio"] = (df["macs"] / base["macs"]).round(2)
    return df


_prefetch = {"thread": None, "want": None, "lock": threading.Lock()}


def prefetch(dataset: str, units: int | None, width: int, width_step: int = 8, widths=(8, 512),
             datasets: tuple = ()) -> None:
    """Profile, in one background thread, the positions next to this one (a unit more or less, a width step
    up or down, the other `datasets`), so the Architectures page's next move finds them cached. A newer call
    replaces the wish list of an older one; nothing here touches the UI."""
    lo, hi = widths
    near = [(dataset, u, width) for u in ((units - 1, units + 1) if units else (1, 2, 3, 4)) if u and 1 <= u <= 4]
    near += [(dataset, units, w) for w in (width + width_step, width - width_step) if lo <= w <= hi]
    near += [(d, units, width) for d in datasets if d != dataset]
    with _prefetch["lock"]:
        _prefetch["want"] = near
        if _prefetch["thread"] is not None and _prefetch["thread"].is_alive():
            return
        t = threading.Thread(target=_prefetch_loop, daemon=True, name="mscompare-profile-prefetch")
        _prefetch["thread"] = t
        t.start()


def wait_for_prefetch(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the background profiling to finish (a timing wants the cores and the GIL
    to itself); True when none is running."""
    with _prefetch["lock"]:
        t = _prefetch["thread"]
    if t is not None:
        t.join(timeout)
    return t is None or not t.is_alive()


@atexit.register
def _stop_prefetch() -> None:
    """At exit: drop the wish list and let the profile in progress finish. A daemon thread stopped by the
    interpreter's shutdown in the middle of torch's C++ code aborts the process ("terminate called without an
    active exception")."""
    with _prefetch["lock"]:
        _prefetch["want"] = None
    wait_for_prefetch(30)


def _prefetch_loop() -> None:
    while True:
        with _prefetch["lock"]:
            if not _prefetch["want"]:
                _prefetch["thread"] = None
                return
            dataset, units, width = _prefetch["want"].pop(0)
        try:
            compare(dataset, units, width)
        except Exception:  # noqa: BLE001 - a guess that fails costs nothing: the page computes it when asked
            pass
