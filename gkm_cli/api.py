"""The public Python API (the CLI is built on it)."""

from __future__ import annotations

from gkm_cli.nets import create_model, default_model, get_spec, list_models
from gkm_cli.nets.checkpoint import shipped_weights


def list_model_info() -> list[dict]:
    """One record per registered architecture: name, params (inference), spec facts, weights path."""
    infos = []
    for name in list_models():
        spec = get_spec(name)
        weights = shipped_weights(name)
        infos.append(
            {
                "name": name,
                "params": create_model(name).inference_parameters(),
                "paper_params": spec.paper_params,
                "default": name == default_model(),
                "tile_exact": spec.tile_exact,
                "size_multiple": spec.size_multiple,
                "paper": spec.paper,
                "weights": str(weights) if weights else None,
            }
        )
    return infos
