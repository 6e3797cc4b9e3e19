"""How long will a batch or a sweep train here? Each run's images (iterations x batch size) over the training speed
this machine measured: the median images/s of the store's finished runs of the same model on the same dataset and
device type, at the same width, units and precision where there are such runs, else at other settings scaled by
their MACs per image. A model with no finished run here has no estimate ("unknown until its first run")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from mscompare.config import paper_units, preset
from mscompare.groups import describe
from mscompare.models import ModelConfig
from mscompare.sweep import device_type, finished_runs, grid


@dataclass(frozen=True)
class Plan:
    """`count` runs of one model and training protocol (seeds of one configuration, or one sweep trial)."""

    model: str
    dataset: str
    images: int  # iterations x batch size, per run
    width: int
    units: int
    precision: str  # fp32 | bf16 | auto (auto: runs of either precision count as the same settings)
    device_type: str  # cpu | cuda
    count: int = 1


@dataclass
class Estimate:
    seconds: float  # the runs with a measured speed
    runs: int  # how many runs that covers
    unknown: list[str] = field(default_factory=list)  # models with no finished run on this dataset and device
    known: list[str] = field(default_factory=list)  # models it has a speed for
    measured_by: int = 0  # finished runs whose speeds it used
    scaled: bool = False  # some speed comes from runs at other settings, scaled by MACs
    skipped: int = 0  # sweep trials with a finished run already, which the sweep does not train again

    def line(self) -> str:
        """One line for the form, e.g. 'Estimated training time: about 12 min (15 runs at the median img/s ...)'."""
        text = f"{self.skipped} finished already (skipped). " if self.skipped else ""
        wait = (f"until a run of {'each' if len(self.unknown) > 1 else 'it'} has finished here"
                if self.unknown else "")
        if not self.runs and not self.unknown:
            return text + "Nothing to train."
        if not self.runs:
            return text + (f"Estimated training time: unknown for {_names(self.unknown)} {wait} (it is measured on "
                           "this machine, never guessed).")
        text += (f"Estimated training time: about {duration(self.seconds)}"
                 + (f" for {_names(self.known)}" if self.unknown else "")
                 + f" ({self.runs} run{'s' if self.runs != 1 else ''} at the median img/s of {self.measured_by} "
                 f"finished run{'s' if self.measured_by != 1 else ''} of the same model, data and device on this "
                 "machine" + (", other widths or units scaled by MACs" if self.scaled else "") + ")")
        return text + (f"; unknown for {_names(self.unknown)} {wait}." if self.unknown else ".")


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _macs(plan: Plan, like: dict) -> int:
    """MACs per image of `plan`'s model: `like` (a stored run's model config, which knows the data's shape, a
    user dataset's too) at the plan's width and units."""
    from mscompare.profile import cached_profile

    return cached_profile(ModelConfig.from_dict({**like, "width": plan.width, "units": plan.units})).macs


def training_time(finished: list[dict] | pd.DataFrame, plans: list[Plan],
                  macs: Callable[[Plan, dict], int] = _macs) -> Estimate:
    """The estimate for `plans` from the store's finished runs (store rows); `macs(plan, model_config)` gives a
    plan's MACs per image (for speeds measured at other settings)."""
    df = describe(finished)
    if not df.empty:
        df = df[(df["status"] == "done") & (pd.to_numeric(df["images_per_s"], errors="coerce") > 0)]
    est, used = Estimate(0.0, 0), set()
    for p in plans:
        same = df[(df["model"] == p.model) & (df["dataset"] == p.dataset) & (df["device_type"] == p.device_type)] \
            if not df.empty else df
        exact = same[(same["width"] == p.width) & (same["units"] == p.units)
                     & ((same["precision"] == p.precision) | (p.precision == "auto"))] if not same.empty else same
        if not exact.empty:
            speed = float(np.median(exact["images_per_s"].astype(float)))
            used.update(exact["id"])
        elif not same.empty and same["macs"].notna().any():
            same = same[same["macs"].notna()]
            like = json.loads(same["model_config"].iloc[0] or "{}")
            speed = float(np.median(same["images_per_s"].astype(float) * same["macs"].astype(float))) / macs(p, like)
            used.update(same["id"])
            est.scaled = True
        else:
            if p.model not in est.unknown:
                est.unknown.append(p.model)
            continue
        est.seconds += p.count * p.images / speed
        est.runs += p.count
        if p.model not in est.known:
            est.known.append(p.model)
    est.measured_by = len(used)
    return est


def for_batch(finished, models: list[str], dataset: str, preset_name: str, iters: int | None, units: int | None,
              width: int, precision: str, device: str, seeds: int, **kw) -> Estimate:
    """The Train page's batch: every model, `seeds` runs each (iters None: the preset's)."""
    cfg = preset(preset_name, dataset, iters=iters or None)
    return training_time(finished, [Plan(m, dataset, cfg.iters * cfg.batch_size, width,
                                         units or paper_units(m, dataset), precision, device_type(device), seeds)
                                    for m in models], **kw)


def for_sweep(store, models: list[str], datasets: list[str], widths: list[int], units: list[int], seeds: int,
              preset_name: str, iters: int | None, device: str = "auto", **kw) -> Estimate:
    """The Sweep page's grid (sweep.grid): the trials a sweep would train, those with a finished run of the same
    protocol in `store` (a RunStore) left out as the sweep leaves them out (counted in `skipped`)."""
    trials = grid(models, datasets, widths, units or None, seeds, preset_name, iters or None, device=device)
    done = finished_runs(store, trials)
    est = training_time(store.list(status="done"), [
        Plan(t.model_config.model, t.train_config.dataset, t.train_config.iters * t.train_config.batch_size,
             t.model_config.width, t.model_config.units, t.train_config.precision, device_type(device))
        for t, d in zip(trials, done) if d is None], **kw)
    est.skipped = sum(d is not None for d in done)
    return est
