"""Command line: the parser and the entry point (the commands are in commands.py). Bad input is one line on stderr."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from mscompare.commands import (cmd_compare, cmd_export, cmd_info, cmd_predict, cmd_report, cmd_reproduce, cmd_runs,
                                cmd_sweep, cmd_train)
from mscompare.config import PRESETS
from mscompare.datasets import DATASETS
from mscompare.models import MAX_UNITS, list_units


class ArgParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def build_parser() -> ArgParser:
    p = ArgParser(prog="mscompare", description="Compare multi-scale separable units with classic CNN units.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ArgParser)
    datasets = list(DATASETS)

    units = dict(type=int, choices=range(1, MAX_UNITS + 1), metavar=f"{{1-{MAX_UNITS}}}",
                 help="units per network (default: the paper's count for the model and dataset)")
    i = sub.add_parser("info", help="params and MACs of every registered model")
    i.add_argument("--dataset", choices=datasets, default="mnist")
    i.add_argument("--units", **units)
    i.add_argument("--width", type=_positive, default=32)
    i.add_argument("--expand", type=_positive, default=1, help="N/C of the multi-scale units' 1x1 expansion")
    i.add_argument("--speed", action="store_true",
                   help="also time each model's inference at batch 1 and 64, one thread and every core, in PyTorch "
                        "eager and exported to ONNX Runtime (a few seconds per model)")
    i.add_argument("--layers", choices=list_units(), metavar="MODEL",
                   help="instead: MODEL's forward time per layer on this CPU (1 thread, median) beside its MACs")
    i.add_argument("--batch", type=_positive, nargs="+", default=[1, 128], metavar="N",
                   help="--layers: the batch sizes to time (default: 1 and the training batch, 128)")
    i.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="export a finished run or a shipped checkpoint to ONNX, checked against PyTorch",
                        description="Write an ONNX file (dynamic batch axis; class names, mean, std and the input's "
                                    "layout in its metadata) and check it with ONNX Runtime against PyTorch on real "
                                    "test images of the checkpoint's dataset: every logit within 1e-3, else an error "
                                    "and no file. Where the test split is not on disk, the repository's samples/ "
                                    "images are used.")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("run", nargs="?", metavar="RUN", help="a finished run's id in the run store (see --runs-dir)")
    what.add_argument("--shipped", metavar="DATASET/MODEL", help="a shipped checkpoint, e.g. mnist/ms_add")
    what.add_argument("--checkpoint", metavar="FILE.safetensors", help="any mscompare checkpoint file")
    ex.add_argument("--onnx", required=True, metavar="FILE.onnx", help="the file to write")
    ex.add_argument("--parity-images", type=int, default=1000, metavar="N",
                    help="test images to check on, evenly spaced through the test split (default 1000; 0: all)")
    ex.add_argument("--data-root", dest="parity_root", default=None, metavar="DIR",
                    help="the folder that holds the dataset's test split (default: the run's data root, else "
                         "the data root of $MSCOMPARE_DATA_ROOT that has the dataset)")
    ex.add_argument("--latency", action="store_true",
                    help="also time PyTorch eager and ONNX Runtime at batch 1 and 64, one thread and every core")
    ex.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train one model")
    t.add_argument("--model", choices=list_units(), required=True)
    t.add_argument("--dataset", required=True, help=f"{', '.join(datasets)} or a folder name under --data-root")
    t.add_argument("--preset", choices=list(PRESETS), default="paper")
    t.add_argument("--units", **units)
    t.add_argument("--width", type=_positive, default=32)
    t.add_argument("--expand", type=_positive, default=1, help="N/C of the multi-scale units' 1x1 expansion")
    t.add_argument("--precision", choices=["fp32", "bf16", "auto"])
    t.add_argument("--image-size", type=_positive, help="image folders: resize every image to S x S on load")
    t.add_argument("--skip-bad", action="store_true", help="image folders: skip corrupt or non-image files")
    for name in ("--iters", "--batch-size", "--eval-every"):
        t.add_argument(name, type=_positive)
    t.add_argument("--lr", type=float, help="learning rate (finite, > 0)")
    t.add_argument("--optimizer", choices=["adam", "sgd"])
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--seed", type=int, default=0, help="the first seed")
    t.add_argument("--seeds", type=_positive, default=1, help="train seeds S, S+1, ..., S+K-1 as one batch")
    t.add_argument("--fuse", choices=["auto", "on", "off"], default="auto",
                   help="train the seeds as one fused computation: auto (default) where a few timed steps say it "
                        "is faster on this machine, on, or off")
    t.add_argument("--no-fuse", dest="fuse", action="store_const", const="off", help="the same as --fuse off")
    t.add_argument("--threads", type=_positive, help="intra-op threads (default: the automatic thread policy)")
    t.add_argument("--json", action="store_true")

    r = sub.add_parser("runs", help="list, show, export or delete stored runs, or their robustness to corruptions")
    r.add_argument("action", nargs="?", choices=["list", "show", "export", "delete", "robustness"], default="list")
    r.add_argument("id", nargs="?")
    r.add_argument("more", nargs="*", metavar="ID", help="robustness: more run ids")
    r.add_argument("--data-root", dest="eval_root", default=None, metavar="DIR",
                   help="robustness: the folder that holds the runs' dataset (default: the one each run trained on)")
    r.add_argument("--corruption-seed", type=int, default=0,
                   help="robustness: the seed of the corruptions' random draws (default 0)")
    r.add_argument("--csv")
    r.add_argument("--json", action="store_true", help="show: the whole record, with confusion and per_class")

    c = sub.add_parser("compare", help="is A better than B? paired tests on the same test images")
    c.add_argument("--a", nargs="+", required=True, metavar="RUN", help="run ids of side A (seeds of one config)")
    c.add_argument("--b", nargs="+", required=True, metavar="RUN", help="run ids of side B")
    c.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="one self-contained HTML report of runs or a batch")
    which_runs = rep.add_mutually_exclusive_group(required=True)
    which_runs.add_argument("--runs", nargs="+", metavar="RUN")
    which_runs.add_argument("--batch", metavar="ID")
    rep.add_argument("--reference", help="the configuration (model name or label) the others are compared with")
    rep.add_argument("--out", required=True, metavar="FILE.html")

    pr = sub.add_parser("predict", help="predict images with the shipped checkpoints or your finished runs")
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--set", choices=["mnist", "cifar10"], help="a shipped checkpoint set")
    which.add_argument("--run", action="append", metavar="ID", help="a finished run's checkpoint (repeat for more)")
    pr.add_argument("--runs-dir", default=None, help="the run store that --run reads")
    pr.add_argument("--cam", metavar="DIR", help="write a class-activation map PNG per image and model to DIR")
    pr.add_argument("--invert", choices=["auto", "yes", "no"], default="auto")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("images", nargs="+")

    rp = sub.add_parser("reproduce", help="train every model with the paper's protocol and write the report")
    rp.add_argument("--dataset", choices=datasets, required=True)
    rp.add_argument("--models", nargs="+", default=["all"])
    rp.add_argument("--seeds", type=_positive, default=2)
    rp.add_argument("--iters", type=_positive)
    rp.add_argument("--preset", choices=list(PRESETS), default="paper")
    rp.add_argument("--width", type=_positive, default=32)
    rp.add_argument("--threads", type=_positive)
    rp.add_argument("--out", default="docs/results")
    rp.add_argument("--ship", action="store_true", help="copy the seed-0 checkpoints into checkpoints/")

    sw = sub.add_parser("sweep", help="train a grid of models x datasets x widths x units x seeds, resumably")
    sw.add_argument("--models", nargs="+", choices=list_units(), required=True)
    sw.add_argument("--datasets", nargs="+", choices=datasets, required=True)
    sw.add_argument("--widths", nargs="+", type=_positive, required=True)
    sw.add_argument("--units", nargs="+", type=int, choices=range(1, MAX_UNITS + 1), metavar=f"{{1-{MAX_UNITS}}}",
                    help="units per network (default: the paper's count per model and dataset)")
    sw.add_argument("--seeds", type=_positive, default=1)
    sw.add_argument("--preset", choices=list(PRESETS), default="paper")
    sw.add_argument("--iters", type=_positive)
    sw.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sw.add_argument("--json", action="store_true")
    for s in (rp, sw):
        s.add_argument("--executor", choices=["local", "ray"], default="local")
        s.add_argument("--workers", type=_positive, help="trials at a time (default: the measured best for the cores)")
        s.add_argument("--ray-address", default="auto", help="auto starts or joins a local Ray; HOST:PORT joins a cluster")
    for s in (t, r, rp, sw, c, rep, ex):
        s.add_argument("--runs-dir", default=None,
                       help="the run store's folder (default: $MSCOMPARE_RUNS_DIR, else ~/.local/share/mscompare/runs)")
    for s in (t, rp, sw):
        s.add_argument("--data-root", default=None,
                       help="the folder that holds the dataset folders (default: the data root of "
                            "$MSCOMPARE_DATA_ROOT that has the dataset, else ~/.local/share/mscompare/data)")
    return p


def _defaults(a) -> None:
    """The run store and data root of settings, where the command line gives none (never the working directory)."""
    from mscompare import settings

    if hasattr(a, "runs_dir") and a.runs_dir is None:
        a.runs_dir = str(settings.runs_dir())
    if hasattr(a, "data_root") and a.data_root is None:
        names = [a.dataset] if hasattr(a, "dataset") and isinstance(a.dataset, str) else getattr(a, "datasets", [])
        a.data_root = str(settings.data_root_for(names[0]) if names else settings.data_roots()[0])


def _stop_on_signals() -> None:
    """SIGTERM stops a long command as Ctrl-C does, and so does SIGINT where the shell ignored it (`cmd &`)."""
    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    from mscompare.checkpoints import CheckpointError
    from mscompare.data import DatasetError
    from mscompare.groups import CompareError
    from mscompare.predictions import PredictionsError
    from mscompare.runs import StoreError
    from mscompare.threads import configure_process, policy
    from mscompare.train import TrainingError

    a = build_parser().parse_args(argv)
    _defaults(a)
    try:
        configure_process(policy(getattr(a, "threads", None) or 0))
        if a.cmd in ("train", "reproduce", "sweep") and threading.current_thread() is threading.main_thread():
            _stop_on_signals()
        return {"info": cmd_info, "train": cmd_train, "runs": cmd_runs, "predict": cmd_predict,
                "reproduce": cmd_reproduce, "sweep": cmd_sweep, "compare": cmd_compare,
                "report": cmd_report, "export": cmd_export}[a.cmd](a)
    except (CompareError, PredictionsError) as e:
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # argument and config validation (width, units, lr, iterations...)
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 2
    except (DatasetError, StoreError, TrainingError, CheckpointError) as e:
        print(f"mscompare: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept in the run store", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`mscompare runs | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
