"""The CLI's commands: one function per subcommand, each a few library calls and what it prints."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

from mscompare.config import preset
from mscompare.datasets import DATASETS
from mscompare.events import Progress
from mscompare.models import list_units


def cmd_info_layers(a) -> int:
    from mscompare import layertime
    from mscompare.config import config_for
    from mscompare.models import uses_expand

    cfg = config_for(a.layers, a.dataset, a.units, a.width, a.expand if uses_expand(a.layers) else 1)
    df = layertime.breakdown(cfg, tuple(a.batch), threads=1)
    print(json.dumps(layertime.as_json(df)) if a.json else f"{layertime.header(df)}\n{layertime.table_text(df)}")
    return 0


def cmd_info(a) -> int:
    from mscompare.profile import compare

    if a.layers:
        return cmd_info_layers(a)
    df = compare(a.dataset, a.units, a.width, a.expand)
    speed = None
    if a.speed:
        from mscompare.export import speed_all

        speed = speed_all(a.dataset, a.units, a.width, a.expand)
    if a.json:
        print(df.to_json(orient="records") if speed is None else
              json.dumps({"models": df.to_dict(orient="records"), "speed": speed.to_dict(orient="records")}))
    else:
        cols = ["model", "units", "expand", "params", "unit_params", "macs", "unit_ratio", "params_ratio",
                "macs_ratio"]
        print(f"{a.dataset}: width {a.width}, expansion N/C {a.expand} (multi-scale units); conv + linear MACs "
              "per image (fvcore; one multiply-add = 1)")
        print(df[cols].to_string(index=False))
        if speed is not None:
            print("\ninference latency, ms: median on this machine now, freshly built models on random inputs; "
                  "PyTorch eager vs ONNX Runtime (speedup = pytorch / onnxruntime)")
            print(speed.drop(columns="all_cores").round(3).to_string(index=False))
    return 0


def cmd_export(a) -> int:
    from mscompare import export as ex
    from mscompare.runs import RunStore, StoreError

    try:
        if a.run:
            from pathlib import Path

            if not (Path(a.runs_dir) / "runs.sqlite").is_file():
                print(f"mscompare: error: no run store in {a.runs_dir} (no runs.sqlite there); see --runs-dir",
                      file=sys.stderr)
                return 1
            src = ex.from_run(RunStore(a.runs_dir), a.run)
        else:
            src = ex.from_shipped(a.shipped) if a.shipped else ex.from_file(a.checkpoint)
        parity = ex.export(src, a.onnx, a.parity_images, a.parity_root)
        lat = ex.latency(src.model, src.cfg, a.onnx) if a.latency else None
    except (ex.ExportError, StoreError) as e:
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 1
    if a.json:
        out = {"source": src.name, "onnx": a.onnx, "images": parity.images, "max_abs_diff": parity.max_abs_diff,
               "top1_agreement": parity.agreement, "parity_images": parity.where}
        print(json.dumps(out if lat is None else {**out, "latency": lat.to_dict(orient="records")}))
        return 0
    print(f"wrote {a.onnx} ({src.name}); {parity.line()}")
    if lat is not None:
        print("latency, ms (median on this machine now; speedup = pytorch / onnxruntime):")
        print(lat.drop(columns="all_cores").round(3).to_string(index=False))
    return 0


def _progress_printer(total: int, as_json: bool):
    """JSON: one line per eval point. Otherwise a tqdm bar that moves every few iterations."""
    if as_json:
        def line(rid: str, p: Progress):
            if p.is_eval:
                print(json.dumps({"event": "progress", "run_id": rid, **{
                    k: round(v, 4) if isinstance(v, float) else v for k, v in p.to_dict().items()}}), flush=True)
        return line, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="it", disable=not sys.stderr.isatty())
    acc = {"test_acc": float("nan")}

    def show(rid: str, p: Progress):
        if p.is_eval:
            acc["test_acc"] = p.test_acc
        if p.iter < bar.n:  # the next seed of a batch trained one by one
            bar.reset()
        bar.update(p.iter - bar.n)
        bar.set_postfix(acc=f"{acc['test_acc']:.4f}", loss=f"{p.loss:.3f}", ips=f"{p.images_per_s:.0f}")

    return show, bar


def cmd_train(a) -> int:
    from mscompare.config import config_for
    from mscompare.data import load_dataset
    from mscompare.jobs import execute_group
    from mscompare.lifecycle import create
    from mscompare.runs import RunStore, new_batch_id

    tcfg = preset(a.preset, a.dataset, iters=a.iters, batch_size=a.batch_size, eval_every=a.eval_every,
                  device=a.device, seed=a.seed, data_root=a.data_root, lr=a.lr, optimizer=a.optimizer,
                  threads=a.threads, precision=a.precision, image_size=a.image_size, skip_bad=a.skip_bad)
    store = RunStore(a.runs_dir)  # a bad runs folder fails before the data is decoded
    import warnings

    from mscompare.data import DatasetWarning

    with warnings.catch_warnings():  # the skipped files get the one line below instead
        warnings.simplefilter("ignore", DatasetWarning)
        data = load_dataset(a.dataset, a.data_root, skip_bad=a.skip_bad, size=a.image_size)
    for split in data:
        if split.skipped:
            print(f"skipped {len(split.skipped)} bad file(s) in {split.source}, e.g. {split.skipped[0]}",
                  file=sys.stderr)
    c, h, _ = data[0].shape
    shape = {} if a.dataset in DATASETS else {"in_channels": c, "input_size": h, "num_classes": len(data[0].classes)}
    mcfg = config_for(a.model, a.dataset, units=a.units, width=a.width, expand=a.expand, **shape)
    batch = new_batch_id()
    rids = [create(store, mcfg, replace(tcfg, seed=s), "cli", batch) for s in range(a.seed, a.seed + a.seeds)]
    show, bar = _progress_printer(tcfg.iters, a.json)
    try:
        rows = execute_group(store, rids, store.dir / "checkpoints", data=data, fuse=a.fuse,
                             on_progress=show)
    finally:
        if bar is not None:
            bar.close()
    failed = 0
    for row in rows:
        if row["status"] != "done":
            print(f"mscompare: error: run {row['id']} {row['status']}: {row['message']}", file=sys.stderr)
            failed += 1
            continue
        result = {"model": a.model, "dataset": a.dataset, "iters": tcfg.iters, "seed": row["seed"],
                  "test_acc": row["test_acc"], "params": row["params"], "macs": row["macs"],
                  "seconds": round(row["seconds"], 2), "images_per_s": round(row["images_per_s"], 1),
                  "run_id": row["id"], "batch": batch, "fused": json.loads(row["env"] or "{}").get("fused", 1),
                  "checkpoint": row["checkpoint"]}
        print(json.dumps(result) if a.json else "\n".join(f"{k}: {v}" for k, v in result.items()), flush=True)
    return 1 if failed else 0


def cmd_compare(a) -> int:
    from mscompare.groups import compare
    from mscompare.runs import RunStore

    store = RunStore(a.runs_dir)
    res = compare(store, a.a, a.b)
    if a.json:
        print(json.dumps(res))
        return 0
    for side in ("a", "b"):
        s = res[side]
        spread = f" ± {s['std']:.2f}" if s["std"] is not None else " (one seed: spread unknown)"
        print(f"{side}: {s['name']}, {s['n']} run(s): {s['mean']:.2f}%{spread}")
    print(f"a - b: {res['diff']:+.2f} points, 95% CI [{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}] ({res['method']})")
    print("McNemar exact p per seed pair: " + ", ".join(f"{p:.3g}" for p in res["p_mcnemar"]))
    print(res["sentence"])
    return 0


def cmd_runs_robustness(store, a) -> int:
    """Accuracy of runs under the corruption suite: stored results, else computed once (a bar on a terminal)."""
    from tqdm import tqdm

    from mscompare import robustness

    ids = [a.id, *a.more] if a.id else []
    if not ids:
        print("mscompare: error: runs robustness needs at least one run id", file=sys.stderr)
        return 2
    try:
        bar = tqdm(total=robustness.pending_steps(store, ids, a.corruption_seed), unit="pass",
                   disable=not sys.stderr.isatty())
        try:
            res = robustness.for_runs(store, ids, a.corruption_seed, a.eval_root, progress=bar.update)
        finally:
            bar.close()
    except robustness.RobustnessError as e:
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res) if a.json else robustness.table_text(res))
    return 0


def cmd_runs(a) -> int:
    import pandas as pd

    from mscompare.runs import RunStore

    store = RunStore(a.runs_dir)
    if a.action == "robustness":
        return cmd_runs_robustness(store, a)
    if a.action == "show":
        row = store.get(a.id) if a.id else None
        if row is None:
            print(f"mscompare: error: no run {a.id!r} in {store.path}", file=sys.stderr)
            return 2
        row["curve"] = store.curve(a.id)
        ev = json.loads(row.pop("evaluation") or "null")
        from mscompare.checkpoints import read_meta

        classes = read_meta(row["checkpoint"]).get("classes")
        names = classes or ([str(i) for i in range(len(ev["per_class"]))] if ev else None)
        if a.json:
            row.update(ev or {})
            row.update(classes=names, ece=(ev or {}).get("ece"))
            print(json.dumps(row, indent=1, default=str))
            return 0
        for k in ("id", "status", "model", "dataset", "preset", "seed", "iters", "test_acc", "params", "macs",
                  "seconds", "images_per_s", "message", "checkpoint"):
            print(f"{k}: {row[k]}")
        if ev:
            if ev.get("ece") is not None:
                print(f"expected calibration error (15 bins): {ev['ece']:.4f}")
            print("\nper-class accuracy:")
            for n, acc in zip(names, ev["per_class"]):
                print(f"  {n:>16s}  {'-' if acc is None else f'{100 * acc:6.2f}%'}")
            print("\nconfusion matrix (rows: true class, columns: predicted):")
            print(pd.DataFrame(ev["confusion"], index=names, columns=names).to_string())
            if ev["confused_pairs"]:
                print("\nmost confused: " + ", ".join(f"{names[p['true']]} -> {names[p['pred']]} ({p['count']})"
                                                     for p in ev["confused_pairs"]))
        return 0
    if a.action == "delete":
        if not a.id:
            print("mscompare: error: runs delete needs a run id", file=sys.stderr)
            return 2
        if not store.delete(a.id):
            print(f"mscompare: error: no run {a.id!r} in {store.path}", file=sys.stderr)
            return 2
        print(f"deleted run {a.id} (its row, curve, checkpoint and predictions)")
        return 0
    df = pd.DataFrame(store.list())
    cols = ["id", "status", "model", "dataset", "preset", "seed", "iters", "test_acc", "params", "seconds",
            "images_per_s", "message"]
    if a.action == "export":
        if not a.csv:
            print("mscompare: error: runs export needs --csv FILE", file=sys.stderr)
            return 2
        from pathlib import Path

        if Path(a.csv).is_dir():
            print(f"mscompare: error: {a.csv} is a folder; give a file name such as {Path(a.csv) / 'runs.csv'}",
                  file=sys.stderr)
            return 2
        if not Path(a.csv).resolve().parent.is_dir():
            print(f"mscompare: error: can't write {a.csv}: the folder {Path(a.csv).resolve().parent} does not exist",
                  file=sys.stderr)
            return 2
        df.to_csv(a.csv, index=False)
        print(f"wrote {len(df)} runs to {a.csv}")
        return 0
    print(df[cols].to_string(index=False) if not df.empty else f"no runs in {store.path}")
    return 0


def cmd_predict(a) -> int:
    from pathlib import Path

    from mscompare.predict import load_runs, load_set, predict_files

    try:
        if a.run:
            from mscompare.runs import RunStore

            if not (Path(a.runs_dir) / "runs.sqlite").is_file():
                print(f"mscompare: error: no run store in {a.runs_dir} (no runs.sqlite there); see --runs-dir", file=sys.stderr)
                return 1
            models = load_runs(RunStore(a.runs_dir), a.run)
        else:
            models = load_set(a.set)
    except Exception as e:  # noqa: BLE001
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 1
    results, failed = predict_files(models, a.images, invert=a.invert)
    for path, err in failed:
        print(f"mscompare: error: {path}: {err}", file=sys.stderr)
    if a.cam:
        from mscompare.cam import explain, write_pngs

        taken: set[str] = set()
        try:
            for r in results:
                maps = explain(models, r["inputs"])
                r["cam"] = write_pngs(a.cam, r["image"], r["inputs"], maps, taken)
                r["cam_class"] = {m: v["label"] for m, v in maps.items()}
        except OSError as e:
            print(f"mscompare: error: can't write the class-activation maps to {a.cam}: {e.strerror or e}", file=sys.stderr)
            return 1
    if a.json:
        keys = ("image", "predictions", "cam") if a.cam else ("image", "predictions")
        print(json.dumps([{k: r[k] for k in keys} for r in results]))
    else:
        for r in results:
            print(r["image"])
            for m, top in r["predictions"].items():
                print(f"  {m:10s} " + "  ".join(f"{t['label']} {t['prob']:.3f}" for t in top))
                if a.cam:
                    print(f"  {'':10s} map for {r['cam_class'][m]}: {r['cam'][m]}")
    return 1 if failed else 0


def cmd_reproduce(a) -> int:
    from mscompare.reproduce import run_all, write_report
    from mscompare.runs import RunStore

    store = RunStore(a.runs_dir)
    models = list_units() if a.models == ["all"] else a.models
    for m in models:
        if m not in list_units():
            print(f"mscompare: error: unknown model {m!r}; choose from {', '.join(list_units())} or all", file=sys.stderr)
            return 2
    run_all(store, a.dataset, models, a.seeds, a.preset, a.iters, a.data_root, a.width, a.threads or 0,
            checkpoint_dir=store.dir / "checkpoints", executor=a.executor, workers=a.workers or 0,
            ray_address=a.ray_address)
    for kind, path in write_report(store, a.dataset, a.out, a.preset).items():
        print(f"wrote {kind}: {path}")
    if a.ship:
        from mscompare.reproduce import ship_checkpoints

        for e in ship_checkpoints(store, a.dataset, preset_name=a.preset):
            print(f"shipped {e['file']} (test_acc {e['test_acc']})")
    return 0


def cmd_sweep(a) -> int:
    from mscompare.sweep import grid, run_trials

    trials = grid(a.models, a.datasets, a.widths, a.units, a.seeds, a.preset, a.iters, a.data_root, a.device)
    from mscompare.data import load_split

    for ds in a.datasets:  # a missing dataset is one clear error before any trial starts
        load_split(ds, a.data_root, train=False)
    from mscompare.runs import RunStore

    store = RunStore(a.runs_dir)
    bar = None
    if a.json:
        def show(rec):
            print(json.dumps({k: v for k, v in rec.items() if k != "message"}), flush=True)
    else:
        from tqdm import tqdm

        bar = tqdm(total=len(trials), unit="trial", disable=not sys.stderr.isatty())

        def show(rec):
            bar.update(1)
            bar.set_postfix(last=f"{rec['model']} w{rec['width']} {rec['status']} {rec['test_acc'] or 0:.4f}")
    from mscompare.sweep import finished_runs
    from mscompare.sweeps import SweepLog

    log = SweepLog(store)  # recorded like the app's sweeps, so the Sweep page lists it and can cancel it
    request = {"models": a.models, "datasets": a.datasets, "widths": a.widths, "units": a.units or [],
               "seeds": a.seeds, "preset": a.preset, "iters": a.iters, "data_root": str(a.data_root),
               "executor": a.executor, "device": a.device}
    sid = log.create(request, len(trials), sum(r is not None for r in finished_runs(store, trials)), a.executor)["id"]
    end = "failed"
    try:
        out = run_trials(store, trials, tag=sid, executor=a.executor, workers=a.workers or 0,
                         ray_address=a.ray_address, on_result=show, should_stop=lambda: log.stop_requested(sid))
        end = "done"
    except KeyboardInterrupt:
        end = "cancelled" if log.stop_requested(sid) else "interrupted"
        raise
    finally:
        log.finish(sid, end)
        if bar is not None:
            bar.close()
    summary = {k: out[k] for k in ("done", "failed", "skipped")}
    print(json.dumps(summary) if a.json else f"sweep: {summary['done']} done, {summary['failed']} failed, "
          f"{summary['skipped']} skipped (already in {store.path})")
    return 1 if summary["failed"] else 0


def cmd_report(a) -> int:
    from mscompare.report import write
    from mscompare.runs import RunStore

    store = RunStore(a.runs_dir)
    ids = a.runs or [r["id"] for r in store.list(batch=a.batch)]
    if not ids:
        print(f"mscompare: error: no runs in batch {a.batch!r} in {store.path}", file=sys.stderr)
        return 2
    print(f"wrote {write(store, ids, a.out, a.reference)}")
    return 0
