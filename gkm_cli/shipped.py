"""Where the files shipped with gkm are found: trained weights, model cards, LPIPS weights.

They live in ``gkm_cli/models/``. In a source checkout that is a symlink to the repository's
``models/`` (one copy of each binary in git); ``pip install .`` and a built wheel copy the real
files in (pyproject's ``[tool.setuptools.package-data]``), so an installed gkm finds its default
model from any working directory. ``$GKM_MODELS_DIR`` replaces the folder of trained weights
(a mirror of the shipped files, or an empty folder to run without them).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MODELS_DIR_ENV", "models_dir", "shipped_file"]

MODELS_DIR_ENV = "GKM_MODELS_DIR"


def shipped_file(*parts: str) -> Path:
    """A path inside the package's own ``models/`` folder (ignores ``$GKM_MODELS_DIR``)."""
    return Path(__file__).resolve().parent.joinpath("models", *parts)


def models_dir() -> Path:
    """The folder of trained weights and cards: ``$GKM_MODELS_DIR`` or the shipped one."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else shipped_file()
