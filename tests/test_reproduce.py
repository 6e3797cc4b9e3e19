"""Reproduction: trains model x seed, resumes without redoing finished runs, writes the tables and curves."""
import pandas as pd
import pytest

from mscompare.reproduce import run_all, ship_checkpoints, table, write_report
from mscompare.runs import RunStore
from mscompare.checkpoints import load_checkpoint, read_manifest, sha256


@pytest.mark.slow
def test_reproduce_resumes_and_reports(tmp_path, tiny_npz, monkeypatch):
    from mscompare import datasets

    # the tiny dataset stands in for a built-in one with its shape (28x28x1, 4 classes)
    monkeypatch.setitem(datasets.DATASETS, "tinydigits", datasets.DatasetSpec("tinydigits", 1, 28, 4, 2, 2, "test", 20, 10, None,
                                                               builtin=False))
    store = RunStore(tmp_path / "runs")
    kw = dict(models=["mobilenet", "ms_add"], seeds=2, iters=20, data_root=str(tiny_npz), width=8,
              checkpoint_dir=tmp_path / "ck", log=lambda *_: None)
    ids = run_all(store, "tinydigits", **kw)
    assert len(ids) == 4 and all(store.get(i)["status"] == "done" for i in ids)
    # an interrupted reproduction: one run left unfinished is redone, the finished ones are not
    store.update(ids[3], status="interrupted")
    again = run_all(store, "tinydigits", **kw)
    assert again[:3] == ids[:3] and again[3] != ids[3]
    assert len(store.list(tag="reproduce:tinydigits:paper")) == 5
    assert run_all(store, "tinydigits", **{**kw, "threads": 1}) == again  # threads change speed, not results

    df = table(store, "tinydigits")
    assert list(df["model"]) == ["mobilenet", "ms_add"] and (df["seeds"] == 2).all()
    accs = pd.DataFrame(store.list(tag="reproduce:tinydigits:paper", status="done")).groupby("model")["test_acc"]
    assert abs(df.set_index("model").loc["ms_add", "acc_mean"] - 100 * accs.mean()["ms_add"]) < 0.01
    out = write_report(store, "tinydigits", tmp_path / "out")
    assert {"csv", "md", "html"} <= set(out)
    assert "ms_add" in (tmp_path / "out" / "tinydigits-paper.md").read_text()
    assert pd.read_csv(out["csv"])["acc_std"].notna().all()

    shipped = ship_checkpoints(store, "tinydigits", dest=tmp_path / "ship")
    assert {e["model"] for e in shipped} == {"mobilenet", "ms_add"}
    for e in read_manifest(tmp_path / "ship"):
        assert sha256(tmp_path / "ship" / e["file"]) == e["sha256"] and e["seed"] == 0
        assert load_checkpoint(tmp_path / "ship" / e["file"])[1].model == e["model"]
