"""The GKM network family behind one registry."""

from gkm_cli.nets.base import Context, ContextStats, DeblurOutput, GkmNetwork, ModelSpec, PretrainedWeights
from gkm_cli.nets.registry import (
    TINY_OVERRIDES,
    config_class,
    create_model,
    default_model,
    get_spec,
    list_models,
    model_config,
)

__all__ = [
    "TINY_OVERRIDES",
    "Context",
    "ContextStats",
    "DeblurOutput",
    "GkmNetwork",
    "ModelSpec",
    "PretrainedWeights",
    "config_class",
    "create_model",
    "default_model",
    "get_spec",
    "list_models",
    "model_config",
]
