"""Shared fixtures: small real-format datasets written to tmp dirs, so no test needs ../shared or a network."""
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def digits_npz(root: Path, name: str = "tinydigits", n_train: int = 600, n_test: int = 200, size: int = 28,
               channels: int = 1, seed: int = 0) -> Path:
    """A learnable npz dataset: each class is a bright square at its own position, plus noise."""
    rng = np.random.default_rng(seed)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 40, (n, size, size, channels)).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, 4 + r * 12:12 + r * 12, 4 + col * 12:12 + col * 12, :] = 230
        np.savez_compressed(d / f"{split}.npz", x=x, y=y.astype(np.int64))
    (d / "classes.txt").write_text("tl\ntr\nbl\nbr\n")
    return d


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test's default run store and data root (settings.home()) are its own, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def tiny_npz(tmp_path):
    digits_npz(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def app_env(tmp_path_factory):
    """Point the app's run store and data root at temporary folders (the Service is cached per process)."""
    base = tmp_path_factory.mktemp("app")
    digits_npz(base / "data", name="mnist", n_train=300, n_test=100)
    os.environ["MSCOMPARE_RUNS_DIR"] = str(base / "runs")
    os.environ["MSCOMPARE_DATA_ROOT"] = str(base / "data")
    return base
