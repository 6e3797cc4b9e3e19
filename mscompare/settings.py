"""Paths and settings: every MSCOMPARE_* environment variable and every default path, none of them relative to
the working directory, so the CLI, the app, sweeps and tools find the same run store from anywhere."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SOURCE = PACKAGE.parent  # the checkout (or site-packages) that holds the package


def home() -> Path:
    """mscompare's own folder: $XDG_DATA_HOME/mscompare, by default ~/.local/share/mscompare."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "mscompare"


def runs_dir() -> Path:
    """The run store's folder: $MSCOMPARE_RUNS_DIR, else <home>/runs. --runs-dir overrides it per command."""
    return Path(os.environ.get("MSCOMPARE_RUNS_DIR") or home() / "runs").expanduser()


def data_roots() -> list[Path]:
    """The folders that hold datasets: $MSCOMPARE_DATA_ROOT (several separated by ':'), else <home>/data."""
    spec = os.environ.get("MSCOMPARE_DATA_ROOT") or str(home() / "data")
    return [Path(p).expanduser() for p in spec.split(os.pathsep) if p]


def data_root_for(name: str) -> Path:
    """The data root that holds dataset `name` (a folder of that name), else the first root (where a built-in
    dataset is downloaded to)."""
    roots = data_roots()
    return next((r for r in roots if (r / name).is_dir()), roots[0])


def shipped_dir() -> Path:
    """The shipped checkpoints: $MSCOMPARE_SHIPPED_DIR, else the checkout's checkpoints/ folder."""
    return Path(os.environ.get("MSCOMPARE_SHIPPED_DIR") or SOURCE / "checkpoints").expanduser()


def training_marks_dir() -> Path:
    """Where training processes mark themselves for the app to see: $MSCOMPARE_TRAINING_MARKS, else one folder
    per user in the system's temp folder (machine-wide, so runs of every store and checkout are seen)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(os.environ.get("MSCOMPARE_TRAINING_MARKS") or Path(tempfile.gettempdir()) / f"mscompare-training-{uid}")


def ray_address() -> str:
    """Where sweeps on Ray go: $MSCOMPARE_RAY_ADDRESS, else auto (join a running local Ray or start one)."""
    return os.environ.get("MSCOMPARE_RAY_ADDRESS") or "auto"


def page_nice(default: int) -> int:
    """The app's page threads' nice value while runs train: $MSCOMPARE_PAGE_NICE, else `default`."""
    return int(os.environ.get("MSCOMPARE_PAGE_NICE", default))
