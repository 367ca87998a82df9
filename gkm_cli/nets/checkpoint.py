"""Weights as safetensors plus a model card JSON beside them; never pickles.

``ggkmnet.safetensors`` holds the tensors and, in its metadata, the architecture name and config
(JSON), so a checkpoint rebuilds its network without the card. ``ggkmnet.json`` (the model card)
holds what a person needs: data, steps, hardware, scores and the commands behind them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gkm_cli.errors import ModelError
from gkm_cli.nets.base import GkmNetwork
from gkm_cli.nets.registry import create_model, model_config

FORMAT_VERSION = "1"


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + fsync + rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model: GkmNetwork, path: Path, *, card: dict | None = None, half: bool = False) -> None:
    """Save a network's state (inference + training heads) and optionally its model card, atomically."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": "gkm",
        "format_version": FORMAT_VERSION,
        "architecture": model.spec.name,
        "config": json.dumps(model_config(model), sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if card is not None:
        atomic_write_bytes(card_path(path), (json.dumps(card, indent=2, sort_keys=False) + "\n").encode())


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable safetensors checkpoint ({e})") from None


def load_weights(path: Path, *, map_location: str | torch.device = "cpu") -> GkmNetwork:
    """Rebuild the network recorded in a checkpoint and load its weights (eval mode, fp32)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    meta = read_metadata(path)
    if meta.get("format") != "gkm" or "architecture" not in meta:
        raise ModelError(f"{path}: not a gkm checkpoint (no architecture in its metadata)")
    model = create_model(meta["architecture"], **json.loads(meta.get("config", "{}")))
    state = load_file(str(path), device=str(map_location))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("srm.")]:
        raise ModelError(f"{path}: weights do not match {meta['architecture']} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def read_card(weights: Path) -> dict | None:
    p = card_path(weights)
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def models_dir() -> Path:
    """Where shipped weights live: ``$GKM_MODELS_DIR`` or the repository's ``models/`` folder."""
    env = os.environ.get("GKM_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def shipped_weights(name: str) -> Path | None:
    """``models/<name>.safetensors`` if it exists, else None."""
    p = models_dir() / f"{name}.safetensors"
    return p if p.is_file() else None


def resolve_model(name: str | None, weights: Path | None) -> tuple[str, Path]:
    """Pick the checkpoint for a run: explicit ``weights`` wins, else the shipped one for ``name``."""
    from gkm_cli.nets.registry import default_model, get_spec

    if weights is not None:
        if not Path(weights).is_file():
            raise ModelError(f"{weights}: weights file not found")
        return read_metadata(Path(weights)).get("architecture", name or "?"), Path(weights)
    name = name or default_model()
    get_spec(name)  # unknown names fail here with the list of valid ones
    found = shipped_weights(name)
    if found is None:
        raise ModelError(
            f"no trained weights for {name!r} in {models_dir()} (none are shipped yet for it); "
            f"train some with `gkm train` or pass --weights FILE"
        )
    return name, found
