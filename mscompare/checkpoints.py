"""Checkpoints as safetensors (no pickled code) with the model config inside, and the shipped manifest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mscompare.config import ModelConfig
from mscompare.models import build_model

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ModelConfig, meta: dict) -> Path:
    """Write weights + {"config", "meta"} metadata; meta holds classes, normalization, training info."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(cfg.to_dict()), "meta": json.dumps(meta)})
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ModelConfig, dict]:
    """Rebuild the model from the config stored in the file and load its weights (eval mode, CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        cfg = ModelConfig.from_dict(json.loads(md["config"]))
        meta = json.loads(md.get("meta", "{}"))
    except Exception as e:  # noqa: BLE001 - safetensors, json and a missing key each raise their own type
        raise CheckpointError(f"{path} is not a valid mscompare checkpoint: {e}") from e
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval(), cfg, meta


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(root: str | Path = SHIPPED) -> list[dict]:
    f = Path(root) / "manifest.json"
    return json.loads(f.read_text()) if f.exists() else []


def write_manifest(entries: list[dict], root: str | Path = SHIPPED) -> None:
    entries = sorted(entries, key=lambda e: (e["dataset"], e["model"]))
    (Path(root) / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
