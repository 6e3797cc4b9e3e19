"""One self-contained HTML report of a set of runs: configurations with spread, paired verdicts, curves with bands,
confusion and reliability diagrams, the environment and the commands that reproduce it. No network at view time."""
from __future__ import annotations

import hashlib
import html
import json
import platform
import shlex
import subprocess
from pathlib import Path

import pandas as pd

from mscompare import charts, groups
from mscompare.checkpoints import read_meta


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="", escape=True)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commands(grouped: pd.DataFrame, rows: dict[str, dict], reference: str | None, report_runs: list[str]) -> list[str]:
    """The CLI commands that train these configurations again (same seeds) and rebuild this report."""
    out = []
    for g in grouped.itertuples():
        first = rows[g.runs[0]]
        m, t = json.loads(first["model_config"]), json.loads(first["train_config"])
        seeds = sorted(g.seeds)
        consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
        seed_args = [f"--seed {seeds[0]} --seeds {len(seeds)}"] if consecutive else [f"--seed {s}" for s in seeds]
        for sa in seed_args:
            out.append(f"python -m mscompare train --model {m['model']} --dataset {shlex.quote(t['dataset'])} "
                       f"--preset {t['preset']} --iters {t['iters']} --units {m['units']} --width {m['width']} "
                       f"--expand {m.get('expand', 1)} --precision {t.get('precision', 'fp32')} "
                       f"--device {t.get('device', 'auto')} --data-root {shlex.quote(str(t['data_root']))} {sa}")
    if reference:
        out.append(f"python -m mscompare report --runs {' '.join(report_runs)} --reference {shlex.quote(reference)} "
                   "--out report.html  # with the new run ids")
    return out


def build(store, run_ids: list[str], reference: str | None = None, title: str = "mscompare report") -> str:
    """The report's HTML for the finished runs among `run_ids` (plotly inlined once; images as data URIs)."""
    from plotly.offline import get_plotlyjs

    rows = {r["id"]: r for r in store.list(ids=run_ids)}
    missing = [r for r in run_ids if r not in rows]
    if missing:
        raise groups.CompareError(f"no run {missing[0]!r} in {store.path}")
    grouped = groups.group(list(rows.values()))
    if grouped.empty:
        raise groups.CompareError("none of these runs has finished; a report needs finished runs")
    ref = _pick_reference(grouped, reference)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{len(rows)} runs in {len(grouped)} configurations, from "
             f"{html.escape(str(store.path))}.</p>", "<h2>Configurations (accuracy over seeds)</h2>"]
    shown = grouped.assign(**{"mean %": (100 * grouped["mean"]).round(2), "std": (100 * grouped["std"]).round(2),
                              "min %": (100 * grouped["min"]).round(2), "max %": (100 * grouped["max"]).round(2),
                              "img/s": grouped["images_per_s"].round(0)})
    parts.append(_table(shown[["label", "n", "mean %", "std", "min %", "max %", "params", "macs", "img/s",
                               "seeds"]]))
    if len(grouped) > 1:
        verdicts = groups.against_reference(store, grouped, ref)
        parts += [f"<h2>Paired verdicts against {html.escape(ref)}</h2>",
                  "<p>Δ = configuration − reference in accuracy points; 95% CI from a bootstrap over seeds and test "
                  "images (one run per side: over test images only, paired).</p>",
                  _table(verdicts.assign(delta=verdicts["delta"].round(2), ci_low=verdicts["ci_low"].round(2),
                                         ci_high=verdicts["ci_high"].round(2)))]
    label_of = {rid: g.label for g in grouped.itertuples() for rid in g.runs}
    curves = pd.DataFrame(store.curves(list(label_of)), columns=["run_id", "iter", "test_acc", "loss"])
    figs = []
    if not curves.empty:
        figs.append(("Curves", charts.band_chart(charts.band_curves(curves, label_of), "Test accuracy and loss")))
    for g in grouped.itertuples():
        row = rows[g.runs[0]]
        ev = json.loads(row.get("evaluation") or "null")
        if not ev:
            continue
        n = len(ev["per_class"])
        ev["classes"] = (read_meta(row.get("checkpoint")).get("classes") or [str(i) for i in range(n)])[:n]
        figs.append((None, charts.confusion_heatmap(ev, f"{g.label}: confusion (seed {row['seed']})")))
        if ev.get("reliability"):
            figs.append((None, charts.reliability_chart(ev["reliability"], f"{g.label}: reliability")))
    for heading, fig in figs:
        if heading:
            parts.append(f"<h2>{heading}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    parts += ["<h2>Environment</h2>", f"<p>Report made with mscompare commit {_commit()} on "
              f"{html.escape(_cpu())}. Each run:</p>", _table(environment(store, rows))]
    parts += ["<h2>Reproduce</h2>", "<pre>" + html.escape("\n".join(commands(grouped, rows, ref, run_ids)))
              + "</pre>"]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}pre{white-space:pre-wrap;font-size:12px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{''.join(parts)}</body></html>")


def _pick_reference(grouped: pd.DataFrame, reference: str | None) -> str:
    """The reference configuration: a label, or the first configuration of a model name; default the first."""
    if reference is None:
        return grouped["label"].iloc[0]
    if reference in set(grouped["label"]):
        return reference
    by_model = grouped[grouped["model"] == reference]
    if by_model.empty:
        raise groups.CompareError(f"no configuration {reference!r} among these runs; choose one of "
                                  f"{', '.join(sorted(set(grouped['model'])))}")
    return by_model["label"].iloc[0]


def environment(store, rows: dict[str, dict]) -> pd.DataFrame:
    """Per configuration of runs: versions, device, precision, thread policy, commit, CPU and test-set fingerprint."""
    from mscompare.predictions import PredictionsError, load

    out = []
    for rid, r in rows.items():
        env = json.loads(r.get("env") or "{}")
        try:
            labels = load(store, rid, compute=False).true
            fingerprint = f"{len(labels):,} images, labels sha256 {hashlib.sha256(labels.tobytes()).hexdigest()[:12]}"
        except PredictionsError:
            fingerprint = "unknown (no predictions)"
        out.append({"run": rid, "model": r["model"], "seed": r["seed"], "torch": env.get("torch"),
                    "torchvision": env.get("torchvision"), "python": env.get("python"), "device": env.get("device"),
                    "gpu": env.get("gpu", ""), "precision": env.get("precision"),
                    "thread policy": json.dumps(env.get("thread_policy"))[:80] if env.get("thread_policy") else "",
                    "fused": env.get("fused", 1), "test set": fingerprint})
    return pd.DataFrame(out)


def write(store, run_ids: list[str], out: str | Path, reference: str | None = None) -> Path:
    out = Path(out)
    if out.is_dir():
        raise groups.CompareError(f"{out} is a folder; give a file name such as {out / 'report.html'}")
    page = build(store, run_ids, reference)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise groups.CompareError(f"can't write the report to {out}: {e.strerror or e}") from e
    return out
