"""The one registry of networks: ``create_model(name, **overrides)`` and ``list_models()``.

Registration is explicit (a dict literal built from the architecture modules), not a
module-level mutable table that imports poke at.
"""

from __future__ import annotations

import dataclasses
import fnmatch

from gkm_cli.errors import ModelError
from gkm_cli.nets.base import GkmNetwork, ModelSpec
from gkm_cli.nets.ggkmnet import GGKMNet, GgkmNetConfig, GGKMNetL
from gkm_cli.nets.gkmanet import GKMANet, GkmaNetConfig
from gkm_cli.nets.gkmnet import GKMNet, GkmNetConfig

_ARCHITECTURES: dict[str, tuple[type[GkmNetwork], type]] = {
    "gkmnet": (GKMNet, GkmNetConfig),
    "ggkmnet": (GGKMNet, GgkmNetConfig),
    "ggkmnet_l": (GGKMNetL, GgkmNetConfig),
    "gkmanet": (GKMANet, GkmaNetConfig),
}

#: Small configurations for fast unit tests and smoke runs (same code paths, fewer channels).
TINY_OVERRIDES: dict[str, dict] = {
    "gkmnet": {"width": 8, "kernels": 5},
    "ggkmnet": {"width": 8, "groups": 4, "per_group": 2},
    "ggkmnet_l": {"width": 8, "groups": 4, "per_group": 2, "res_blocks": 2},
    "gkmanet": {"width": 8, "kernels": 5, "grid": 4, "attention_dim": 16, "dense_layers": 2, "growth": 8},
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a glob pattern, in registration order."""
    return [name for name in _ARCHITECTURES if fnmatch.fnmatch(name, pattern)]


def get_spec(name: str) -> ModelSpec:
    return _lookup(name)[0].spec


def default_model() -> str:
    return next(n for n, (cls, _) in _ARCHITECTURES.items() if cls.spec.default)


def config_class(name: str) -> type:
    return _lookup(name)[1]


def create_model(name: str, **overrides) -> GkmNetwork:
    """Build an architecture with its paper configuration, changed by ``overrides``.

    Unknown names or config fields raise :class:`ModelError` listing what is valid.
    """
    cls, config_cls = _lookup(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ModelError(f"{name}: unknown config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    if cls is GGKMNetL:
        overrides.setdefault("res_blocks", 5)
    return cls(config_cls(**overrides))


def model_config(model: GkmNetwork) -> dict:
    """The config of a built model as a plain dict (recorded in checkpoints and reports)."""
    return dataclasses.asdict(model.config)  # type: ignore[arg-type]


def _lookup(name: str) -> tuple[type[GkmNetwork], type]:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(_ARCHITECTURES)}") from None


