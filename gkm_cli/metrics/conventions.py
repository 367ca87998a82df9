"""Evaluation conventions as pure functions on N x C x H x W tensors in [0,1].

Published numbers differ by these switches (see DESIGN.md section 3); a
:class:`~gkm_cli.metrics.Protocol` picks them and :func:`prepare` applies them in a fixed
order: clamp -> quantise (ground truth) / round (prediction) -> crop -> Y channel.
"""

from __future__ import annotations

import torch

from gkm_cli.errors import UsageError

__all__ = [
    "BT601_Y",
    "clamp01",
    "colour_align",
    "crop",
    "crop_border",
    "quantise",
    "rgb_to_y",
]

#: BT.601 luma for RGB in [0,1] giving Y in [16, 235] / 255 (as BasicSR's ``rgb2ycbcr``).
BT601_Y: tuple[float, float, float, float] = (65.481, 128.553, 24.966, 16.0)


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1]."""
    return x.clamp(0.0, 1.0)


def quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Clamp to [0,1] and round to the grid of a ``bits``-bit integer image (k / (2^bits - 1)).

    Rounding is half-to-even (torch.round), as ``round(x * 255)`` in the reference scripts.
    The result stays in [0,1] units, so the data range stays 1.
    """
    if not 1 <= bits <= 32:
        raise UsageError(f"bit depth must be between 1 and 32, got {bits}")
    peak = float(2**bits - 1)
    return torch.round(clamp01(x) * peak) / peak


def crop(x: torch.Tensor, *, border: int = 0, top: int = 0) -> torch.Tensor:
    """Remove ``border`` pixels on every side and ``top`` further rows at the top."""
    if border < 0 or top < 0:
        raise UsageError(f"crop sizes must be >= 0, got border={border}, top={top}")
    h, w = x.shape[-2:]
    if 2 * border + top >= h or 2 * border >= w:
        raise UsageError(f"cropping border={border}, top={top} leaves nothing of a {h}x{w} image")
    if border == 0 and top == 0:
        return x
    return x[..., border + top : h - border, border : w - border]


def crop_border(x: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels on every side (BasicSR's ``crop_border``)."""
    return crop(x, border=border)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of N x 3 x H x W RGB in [0,1] -> N x 1 x H x W in [16/255, 235/255].

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``, BasicSR's ``test_y_channel``.
    Not rounded; the data range stays 1 (255 on the 0..255 scale), as in BasicSR.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise UsageError(f"rgb_to_y expects N x 3 x H x W, got {tuple(x.shape)}")
    wr, wg, wb, off = BT601_Y
    y = (x[:, 0:1] * wr + x[:, 1:2] * wg + x[:, 2:3] * wb + off) / 255.0
    return y


def colour_align(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Least-squares per-channel affine fit ``a x + b`` of each image to ``ref``, applied to x.

    Removes global brightness / colour-balance differences (exposure changes between the
    captures of a pair) so that PSNR measures structure. Each image of the batch and each
    channel gets its own (a, b). A constant channel gets a = 0, b = mean(ref). Not clamped.
    """
    if x.shape != ref.shape:
        raise UsageError(f"shape mismatch: {tuple(x.shape)} vs {tuple(ref.shape)}")
    mx = x.mean(dim=(-2, -1), keepdim=True)
    mr = ref.mean(dim=(-2, -1), keepdim=True)
    dx = x - mx
    var = dx.square().mean(dim=(-2, -1), keepdim=True)
    cov = (dx * (ref - mr)).mean(dim=(-2, -1), keepdim=True)
    tiny = torch.finfo(x.dtype).tiny if x.is_floating_point() else 0.0
    a = torch.where(var > tiny, cov / var.clamp_min(tiny), torch.zeros_like(var))
    return a * dx + mr
