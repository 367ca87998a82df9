"""Helpers shared by the test files: the CLI in a subprocess, tiny networks, test images.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``, see
``[tool.pytest.ini_options] pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gkm_cli.images import Image, encode_image
from gkm_cli.nets import TINY_OVERRIDES, GkmNetwork, create_model
from gkm_cli.nets.checkpoint import save_weights


def gkm(
    *args: object,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    text: bool = True,
    capture_output: bool = True,
    **kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """``gkm ARGS`` in a fresh interpreter (``python -m gkm_cli``), as a user runs it; ``env`` is
    added to this process's environment. The result is returned whatever the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "gkm_cli", *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=capture_output,
        text=text,
        timeout=timeout,
        check=False,
        **kw,
    )


def tiny_model(name: str = "ggkmnet", *, seed: int = 0, noise: float = 0.02) -> GkmNetwork:
    """The architecture's tiny test configuration (``TINY_OVERRIDES``), seeded; ``noise`` adds
    that much Gaussian noise to every parameter, so the identity-initialised parts are not the
    identity (0: the untrained network). Returned in training mode, as ``create_model`` builds it."""
    torch.manual_seed(seed)
    model = create_model(name, **TINY_OVERRIDES[name])
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    return model


def tiny_checkpoint(folder: Path, name: str = "ggkmnet", *, noise: float = 0.02) -> Path:
    """:func:`tiny_model` with perturbed weights saved as ``folder/tiny_NAME.safetensors``."""
    path = folder / f"tiny_{name}.safetensors"
    save_weights(tiny_model(name, noise=noise), path)
    return path


def photo(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise, float32 in [0, 1] (H x W x C)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = [0.5 + 0.4 * np.sin(x / (5 + 3 * k) + y / (7 + 2 * k)) for k in range(c)]
    img = np.stack(base, -1) + 0.05 * rng.standard_normal((h, w, c))
    return np.clip(img, 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two [0, 1] images (clipped to [0, 1] first); inf when they are equal."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Float [0, 1] H x W x 3 pixels as an 8-bit PNG at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image(
        pixels=pixels.astype(np.float32), alpha=None, dtype=np.dtype("uint8"), format="png", icc=None, exif=None
    )
    path.write_bytes(encode_image(img, "png"))


def tiny_train_args(out: Path, photos: Path, *, holdout: str | None = None) -> list[str]:
    """``gkm train run`` arguments of a tiny-network run on synthetic defocus of ``photos``
    (``holdout``: ``--synth-holdout``); tests add their own steps, patch and batch."""
    args = ["train", "run", "--out", str(out), "--tiny", "--synth-from", str(photos)]
    return args if holdout is None else [*args, "--synth-holdout", holdout]
