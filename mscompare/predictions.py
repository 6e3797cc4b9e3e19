"""Per-test-image predictions of a finished run (predicted class, its probability, true class): one compressed
npz per run under `<runs_dir>/predictions/`, written at the end of training, read by the paired tests."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PredictionsError(RuntimeError):
    """A run's predictions are missing or unreadable; the message names the run and the file."""


@dataclass(frozen=True)
class Predictions:
    pred: np.ndarray  # int, predicted class per test image
    prob: np.ndarray  # float32, the softmax probability of the predicted class
    true: np.ndarray  # int, the true class

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.true

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.true) else 0.0

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, pred=self.pred.astype(np.int32), prob=self.prob.astype(np.float32),
                            true=self.true.astype(np.int32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "predictions") -> "Predictions":
        try:
            with np.load(io.BytesIO(data)) as z:
                p = cls(z["pred"], z["prob"], z["true"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise PredictionsError(f"{where} is not a readable predictions file ({e})") from e
        if not len(p.pred) == len(p.prob) == len(p.true):
            raise PredictionsError(f"{where} holds arrays of different lengths")
        return p


def path_for(runs_dir: str | Path, rid: str) -> Path:
    return Path(runs_dir) / "predictions" / f"{rid}.npz"


def save(path: str | Path, preds: Predictions) -> Path:
    """Write atomically (a half-written file never has the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(preds.to_bytes())
    tmp.replace(path)
    return path


def load(store, rid: str, compute: bool = True) -> Predictions:
    """A finished run's predictions: from its file, or, where the run finished before predictions were stored,
    computed once from its checkpoint on its test set and saved (`compute`)."""
    path = path_for(store.dir, rid)
    if path.is_file():
        return Predictions.from_bytes(path.read_bytes(), str(path))
    row = store.get(rid)
    if row is None:
        raise PredictionsError(f"no run {rid!r} in {store.path}")
    if row["status"] != "done":
        raise PredictionsError(f"run {rid} is {row['status']}, not done: it has no test predictions")
    if not compute or not row.get("checkpoint"):
        raise PredictionsError(f"run {rid} has no stored predictions and no checkpoint to compute them from")
    preds = from_checkpoint(row)
    save(path, preds)
    return preds


def from_checkpoint(row: dict) -> Predictions:
    """Predictions of a stored run's checkpoint on its dataset's test split, on CPU in fp32."""
    import torch

    from mscompare.checkpoints import load_checkpoint
    from mscompare.data import Batches, load_split

    tcfg = json.loads(row["train_config"])
    model, _, meta = load_checkpoint(row["checkpoint"])
    test = load_split(tcfg["dataset"], tcfg["data_root"], train=False, size=tcfg.get("image_size") or None,
                      skip_bad=tcfg.get("skip_bad", False))
    batches = Batches(test, meta["norm"]["mean"], meta["norm"]["std"], torch.device("cpu"))
    return predict_batches(model, batches)


def predict_batches(model, batches, autocast=None) -> Predictions:
    """The model's top-1 class and its probability for every image of `batches` (eval mode, no gradients)."""
    import contextlib

    import torch

    ctx = autocast or contextlib.nullcontext
    model.eval()
    preds, probs, trues = [], [], []
    with torch.inference_mode():
        for x, y in batches.eval_batches():
            with ctx():
                p = model(x).float().softmax(1)
            c, k = p.max(1)
            preds.append(k.cpu()), probs.append(c.cpu()), trues.append(y.cpu())
    return Predictions(torch.cat(preds).numpy(), torch.cat(probs).numpy(), torch.cat(trues).numpy())


def delete(runs_dir: str | Path, rid: str) -> None:
    path_for(runs_dir, rid).unlink(missing_ok=True)
