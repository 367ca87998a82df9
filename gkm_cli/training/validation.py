"""Validation during training: a small fixed set held in memory, scored with PSNR/SSIM.

Images are centre-cropped to at most ``max_size`` pixels a side so validation stays fast on a
CPU. ``real_pairs_dev`` images carry a text label in their top rows (shared/data/README.md):
the first 72 rows are dropped for them unless ``top_crop`` says otherwise. Scores use
:mod:`gkm_cli.metrics` (prediction clamped to [0,1], data range 1, not quantised, SSIM with the
Gaussian 11x11 window) and the input's own scores are reported beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gkm_cli.errors import DataError
from gkm_cli.runtime import autocast

REAL_DEV_TOP_CROP = 72


@dataclass(frozen=True)
class ValImage:
    name: str
    blur: torch.Tensor  # 1 x 3 x H x W in [0,1]
    sharp: torch.Tensor


def _center_crop(a: np.ndarray, max_size: int) -> np.ndarray:
    h, w = a.shape[:2]
    ch, cw = min(h, max_size), min(w, max_size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return a[top : top + ch, left : left + cw]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))[None]


def load_val_pairs(roots: Sequence[str | Path], max_size: int, top_crop: int | None = None) -> list[ValImage]:
    """Pairs of each folder in ``roots`` (any layout ``list_pairs`` knows), cropped, in memory."""
    from gkm_cli.data.layouts import list_pairs, read_native, to_float
    from gkm_cli.data.synth import as_rgb

    out: list[ValImage] = []
    for root in roots:
        crop = (
            top_crop
            if top_crop is not None
            else (REAL_DEV_TOP_CROP if "real_pairs_dev" in Path(root).resolve().parts else 0)
        )
        for pair in list_pairs(root):
            b, s = as_rgb(to_float(read_native(pair.blur))), as_rgb(to_float(read_native(pair.sharp)))
            if b.shape != s.shape:
                raise DataError(f"validation pair {pair.name}: sizes differ ({b.shape} vs {s.shape})")
            b, s = b[crop:], s[crop:]
            out.append(
                ValImage(
                    f"{Path(root).name}/{pair.name}",
                    _tensor(_center_crop(b, max_size)),
                    _tensor(_center_crop(s, max_size)),
                )
            )
    if not out:
        raise DataError(f"no validation pairs in {', '.join(map(str, roots))}")
    return out


def synth_val_set(photos: Sequence[Path], n: int, size: int, synth_config: Any, seed: int) -> list[ValImage]:
    """``n`` fixed synthetic patches of ``size`` px from held-out photos (and dead leaves)."""
    from gkm_cli.data import SynthPatchDataset

    ds = SynthPatchDataset(
        list(photos), patch=size, synth_config=synth_config, length=n, seed=seed + 7919, augment=False
    )
    ds.set_epoch(0)
    out = []
    for i in range(n):
        item = ds[i]
        out.append(ValImage(f"synth/{i:03d}", item["blur"][None], item["sharp"][None]))
    return out


def _scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    try:
        from gkm_cli.metrics import psnr, ssim

        return float(psnr(x, y, data_range=1.0)[0]), float(ssim(x, y, data_range=1.0)[0])
    except ImportError:  # metrics package not available: our own (same conventions)
        from gkm_cli.training.losses import ssim_map_mean

        mse = float(((x.double() - y.double()) ** 2).mean())
        return 10 * float(np.log10(1.0 / max(mse, 1e-20))), float(ssim_map_mean(x.double(), y.double())[0])


@torch.no_grad()
def validate(
    model: nn.Module,
    images: Sequence[ValImage],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of the model's output and of the input, and the gain."""
    was_training = model.training
    model.eval()
    ps, ss, ips, iss = [], [], [], []
    try:
        for im in images:
            y = im.blur.to(device)
            with autocast(device, autocast_dtype):
                out = model(y).image
            pred = out.float().clamp(0, 1).cpu()
            p, s = _scores(pred, im.sharp)
            ip, is_ = _scores(im.blur, im.sharp)
            ps.append(p)
            ss.append(s)
            ips.append(ip)
            iss.append(is_)
    finally:
        model.train(was_training)
    return {
        "psnr": float(np.mean(ps)),
        "ssim": float(np.mean(ss)),
        "input_psnr": float(np.mean(ips)),
        "input_ssim": float(np.mean(iss)),
        "gain_psnr": float(np.mean(ps) - np.mean(ips)),
        "n": float(len(images)),
    }
