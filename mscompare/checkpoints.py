"""Checkpoints as safetensors (no pickled code) with the model config inside, their verification, and the manifest."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes, save_file

from mscompare.config import ModelConfig
from mscompare.models import build_model

from mscompare.settings import shipped_dir

SHIPPED = shipped_dir()


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


def _metadata(data: bytes) -> dict:
    """The safetensors header's __metadata__: an 8-byte little-endian length, then that much JSON."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def load_checkpoint(path: str | Path, sha256: str | None = None) -> tuple[torch.nn.Module, ModelConfig, dict]:
    """Rebuild the model from the config stored in the file and load its weights (eval mode, CPU).

    With `sha256` (the manifest's), the bytes are verified before use; they are read once, so what is
    hashed is what is loaded. The stored config and class names must fit the weights.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"can't read checkpoint {path}: {e.strerror or e}") from e
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CheckpointError(f"{path} does not match the manifest (sha256 {actual[:12]}..., expected "
                                  f"{sha256[:12]}...): the file is damaged or was replaced")
    try:
        state = load_bytes(data)
        md = _metadata(data)
        cfg = ModelConfig.from_dict(json.loads(md["config"]))
        meta = json.loads(md.get("meta", "{}"))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
        model = build_model(cfg)
    except Exception as e:  # noqa: BLE001 - safetensors, json, struct and a missing key each raise their own type
        raise CheckpointError(f"{path} is not a valid mscompare checkpoint: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path}: the weights do not fit the stored config ({cfg.model}, "
                              f"{cfg.num_classes} classes): {detail}") from e
    classes = meta.get("classes")
    if classes is not None and len(classes) != cfg.num_classes:
        raise CheckpointError(f"{path} lists {len(classes)} class names for {cfg.num_classes} outputs")
    return model.eval(), cfg, meta


def read_meta(path: str | Path | None) -> dict:
    """A checkpoint's meta (classes, normalization, training info) from its header alone; {} where there is
    no readable checkpoint."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            md = json.loads(f.read(n)).get("__metadata__") or {}
        meta = json.loads(md.get("meta", "{}"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError, struct.error):
        return {}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(root: str | Path = SHIPPED) -> list[dict]:
    f = Path(root) / "manifest.json"
    return json.loads(f.read_text()) if f.exists() else []


def write_manifest(entries: list[dict], root: str | Path = SHIPPED) -> None:
    entries = sorted(entries, key=lambda e: (e["dataset"], e["model"]))
    (Path(root) / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
