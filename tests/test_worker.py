"""Worker processes forked from the forkserver: nothing heavy imported per run, nothing of the main script that
started them, and the environment of the submit."""
import sys
import types
from pathlib import Path

from conftest import digits_npz, wait_for
from mscompare import worker
from mscompare.config import TrainConfig
from mscompare.manager import RunManager
from mscompare.models import ModelConfig
from mscompare.runs import RunStore
from mscompare.worker import run as worker_run

SMALL = ModelConfig(model="mobilenet", width=8, units=2, num_classes=4)


def tcfg(root, **kw):
    return TrainConfig(**{"dataset": "tinydigits", "data_root": str(root), "iters": 20, "batch_size": 32,
                          "eval_every": 10, "device": "cpu", **kw})


def train_one(tmp_path) -> dict:
    """One small run, trained by a RunManager of its own; its row in the store."""
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    try:
        rid = mgr.add(SMALL, tcfg(tmp_path))
        assert mgr.wait(timeout=120)
    finally:
        mgr.close(timeout=0)
    return store.get(rid)


def _spy(job, *conns):
    """worker.run, writing down the modules it imported (in the worker, where this module is not patched)."""
    before = set(sys.modules)
    worker_run(job, *conns)
    Path(job["env"]["MSCOMPARE_TEST_IMPORTS"]).write_text("\n".join(sorted(set(sys.modules) - before)))


def test_a_worker_trains_a_run_without_importing_torch_or_the_training_code(tmp_path, monkeypatch):
    digits_npz(tmp_path)
    out = tmp_path / "imports.txt"
    monkeypatch.setenv("MSCOMPARE_TEST_IMPORTS", str(out))
    monkeypatch.setattr(worker, "run", _spy)
    row = train_one(tmp_path)
    assert row["status"] == "done", row["message"]
    imported = out.read_text().split()
    heavy = [m for m in imported if m.split(".")[0] in ("torch", "torchvision", "scipy", "mscompare", "PIL")]
    assert heavy == [], f"imported per run, not by the forkserver (worker.PRELOAD): {heavy}"


def test_a_worker_runs_in_the_environment_of_its_submit_not_the_forkservers(tmp_path, monkeypatch):
    """The forkserver outlives the test (or the app page) that started it: each worker gets the environment
    its manager had when the run was submitted, e.g. where training marks go."""
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    mgr = RunManager(store, concurrency=1)
    try:
        first = mgr.add(SMALL, tcfg(tmp_path))  # the forkserver runs from now on, if no earlier test started it
        assert mgr.wait(timeout=120) and store.get(first)["status"] == "done"
        marks = tmp_path / "marks-set-later"
        monkeypatch.setenv("MSCOMPARE_TRAINING_MARKS", str(marks))
        long = mgr.add(SMALL, tcfg(tmp_path, iters=100000))
        wait_for(lambda: marks.is_dir() and any(marks.iterdir()), "the worker's training mark in the new folder")
        mgr.cancel(long)
        assert mgr.wait(timeout=30) and store.get(long)["status"] == "cancelled"
    finally:
        mgr.close(timeout=0)


def test_a_worker_imports_nothing_of_the_main_script_that_started_it(tmp_path, monkeypatch):
    """Streamlit installs the page script it runs as __main__, and a forkserver child imports the parent's main
    script before its target: the page (or a user's unguarded script) would run again in every worker."""
    digits_npz(tmp_path)
    ran = tmp_path / "the main script ran"
    script = tmp_path / "page.py"
    script.write_text(f"open({str(ran)!r}, 'w').close()\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    row = train_one(tmp_path)
    assert row["status"] == "done", row["message"]
    assert sys.modules["__main__"] is page  # put back after the start
    assert not ran.exists()
