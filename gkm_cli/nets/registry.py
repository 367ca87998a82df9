"""The one registry of networks: ``create_model(name, **overrides)`` and ``list_models()``.

Registration is explicit (a dict literal built from the architecture modules), not a
module-level mutable table that imports poke at.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gkm_cli.errors import ModelError
from gkm_cli.nets.base import GkmNetwork, ModelSpec
from gkm_cli.nets.ggkmnet import GGKMNet, GgkmNetConfig, GGKMNetL, GgkmNetLConfig
from gkm_cli.nets.gkmanet import GKMANet, GkmaNetConfig
from gkm_cli.nets.gkmnet import GKMNet, GkmNetConfig

_ARCHITECTURES: dict[str, tuple[type[GkmNetwork], type]] = {
    "gkmnet": (GKMNet, GkmNetConfig),
    "ggkmnet": (GGKMNet, GgkmNetConfig),
    "ggkmnet_l": (GGKMNetL, GgkmNetLConfig),
    "gkmanet": (GKMANet, GkmaNetConfig),
}

#: Small configurations for fast unit tests and smoke runs (same code paths, fewer channels).
TINY_OVERRIDES: dict[str, dict[str, int]] = {
    "gkmnet": {"width": 8, "kernels": 5},
    "ggkmnet": {"width": 8, "groups": 4, "per_group": 2},
    "ggkmnet_l": {"width": 8, "groups": 4, "per_group": 2, "res_blocks": 2},
    "gkmanet": {"width": 8, "kernels": 5, "grid": 4, "attention_dim": 16, "dense_layers": 2, "growth": 8},
}


#: Inclusive bounds of every integer config field (checked for configs read from files, before
#: anything is built: a crafted ``{"width": 4096}`` or ``{"groups": 100000}`` would otherwise
#: allocate gigabytes or hang). Generous: several times the papers' sizes.
CONFIG_BOUNDS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "width": (1, 256),
        "kernels": (1, 64),
        "groups": (1, 64),
        "per_group": (1, 16),
        "res_blocks": (0, 16),
        "lstm_kernel": (1, 15),
        "grid": (1, 64),
        "heads": (1, 64),
        "attention_dim": (1, 1024),
        "dense_layers": (1, 16),
        "growth": (1, 256),
    }
)


def check_config(name: str, config: object) -> dict[str, object]:
    """A config read from a file, checked against the architecture's fields and bounds.

    Returns it as a dict; raises :class:`ModelError` (one line) for anything that is not a JSON
    object of known fields with in-bounds integers (and a known ``gaussian_method``).
    """
    from gkm_cli.ops.gaussian import METHODS

    _, config_cls = _lookup(name)
    if not isinstance(config, dict):
        raise ModelError(f"{name}: config must be a JSON object, got {type(config).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ModelError(
            f"{name}: unknown config field(s) {', '.join(map(str, unknown))}; valid: {', '.join(sorted(fields))}"
        )
    for key, value in config.items():
        default = fields[key].default
        if isinstance(default, str):
            # A string field lists its values in its metadata (gkmnet's bank_layout, batch_norm).
            allowed = (
                ("auto", *METHODS)
                if key == "gaussian_method"
                else tuple(fields[key].metadata.get("choices", (default,)))
            )
            if value not in allowed:
                raise ModelError(f"{name}: config {key}={value!r} is not one of {', '.join(allowed)}")
            continue
        low, high = CONFIG_BOUNDS.get(key, (1, 1024))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{name}: config {key}={value!r} must be an integer")
        if not low <= value <= high:
            raise ModelError(f"{name}: config {key}={value} is out of bounds ({low}..{high})")
    return dict(config)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a glob pattern, in registration order."""
    return [name for name in _ARCHITECTURES if fnmatch.fnmatch(name, pattern)]


def get_spec(name: str) -> ModelSpec:
    return _lookup(name)[0].spec


def default_model() -> str:
    """The architecture whose spec says ``default`` (the one with shipped weights)."""
    return next(n for n, (cls, _) in _ARCHITECTURES.items() if cls.spec.default)


def config_class(name: str) -> type:
    return _lookup(name)[1]


def create_model(name: str, **overrides: object) -> GkmNetwork:
    """Build an architecture with its paper configuration, changed by ``overrides``.

    Unknown names or config fields raise :class:`ModelError` listing what is valid.
    """
    cls, config_cls = _lookup(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ModelError(f"{name}: unknown config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    return cls(config_cls(**overrides))


def model_config(model: GkmNetwork) -> dict[str, Any]:
    """The config of a built model as a plain dict (recorded in checkpoints and reports)."""
    return dataclasses.asdict(model.config)


def _lookup(name: str) -> tuple[type[GkmNetwork], type]:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(_ARCHITECTURES)}") from None
