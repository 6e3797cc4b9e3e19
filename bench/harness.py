"""Owns what the benchmarks share: their flags, the machine header, alternating rounds and the report file."""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from mscompare import settings

REPO = Path(__file__).resolve().parent.parent
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
T = TypeVar("T")


def parser(doc: str, *, out: str = "", wait_quiet_s: float | None = 0.0,
           data_root: bool = False) -> argparse.ArgumentParser:
    """A parser described by the module docstring, with the shared flags: --out, --wait-quiet-s (unless
    wait_quiet_s is None) and, for benchmarks that read datasets, --data-root."""
    ap = argparse.ArgumentParser(prog=f"python -m bench.{Path(sys.argv[0]).stem}",
                                 description=doc.strip().splitlines()[0])
    ap.add_argument("--out", default=out, help=f"write the report here, '' = don't (default: {out or 'none'})")
    if wait_quiet_s is not None:
        ap.add_argument("--wait-quiet-s", type=float, default=wait_quiet_s,
                        help=f"first wait at most this long for a quiet machine, 0 = don't (default: {wait_quiet_s:g})")
    if data_root:
        ap.add_argument("--data-root", default=None, help="the folder that holds the datasets (default: the "
                        "library's data root for each dataset: $MSCOMPARE_DATA_ROOT, else its own data folder)")
    return ap


def data_root(given: str | None, dataset: str) -> str:
    """--data-root if given, else the library's data root that holds `dataset` (mscompare.settings)."""
    return given or str(settings.data_root_for(dataset))


def cpu_description() -> str:
    """The CPU model, the cores this process may use and which ISA flags that matter for fp32/bf16 training it has."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or [None, ""])[1].split())
    return (f"{model[1].strip() if model else platform.processor() or '?'}, {len(os.sched_getaffinity(0))} cores "
            "usable; flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ISA_FLAGS))


def machine_header() -> list[str]:
    """The command, date, CPU, torch and python versions, load average and the commit the library is at."""
    import torch

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout
        except OSError:
            return ""

    dirty = [x for x in git("status", "--porcelain", "--untracked-files=no", "--", "mscompare", "app.py", "ui.py",
                            "pages").splitlines() if x]
    return [f"# python -m bench.{Path(sys.argv[0]).stem} " + " ".join(sys.argv[1:]),
            f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", f"cpu: {cpu_description()}",
            f"torch {torch.__version__}, python {platform.python_version()}; load average at start "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            f"code: commit {git('rev-parse', '--short', 'HEAD').strip() or '?'}"
            + (f" + uncommitted changes to {len(dirty)} app/library files" if dirty else "")]


def busy_cores(window: float) -> float:
    """Cores kept busy on the whole machine over `window` seconds (/proc/stat: all but idle and iowait)."""
    def busy() -> int:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f[:8]) - f[3] - f[4]

    b0, t0 = busy(), time.perf_counter()
    time.sleep(window)
    return (busy() - b0) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - t0)


def wait_quiet(max_wait: float, limit: float = 0.15, window: float = 5.0, needed: int = 3) -> float:
    """Wait until the machine keeps fewer than `limit` cores busy for `needed` windows in a row (call it while
    the benchmark itself is idle), at most `max_wait` seconds. Returns the seconds waited."""
    t0, quiet = time.perf_counter(), 0
    while quiet < needed and time.perf_counter() - t0 < max_wait:
        quiet = quiet + 1 if busy_cores(window) < limit else 0
    return time.perf_counter() - t0


def alternate(rounds: int, sides: dict[str, Callable[[int], T]]) -> dict[str, list[T]]:
    """Measure every side once per round, in reverse order every other round, so the machine's drift hits all
    sides alike. Each side is called with the round number (0-based); returns each side's results by round."""
    out: dict[str, list[T]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            out[name].append(sides[name](r))
    return out


class Report:
    """A benchmark's report: the machine header (after waiting for a quiet machine if asked), then say()'s lines,
    each printed as it comes; write() saves them all to --out."""

    def __init__(self, args: argparse.Namespace):
        self.out, self.lines = args.out, []
        for line in machine_header():
            self.say(line)
        if getattr(args, "wait_quiet_s", 0):
            self.say(f"waited {wait_quiet(args.wait_quiet_s):.0f} s for a quiet machine")

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self) -> None:
        if self.out:
            Path(self.out).write_text("\n".join(self.lines) + "\n")
            print(f"wrote {self.out}")
