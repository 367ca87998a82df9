"""Image pyramids shared by inference, training targets and losses.

Downscaling is bilinear with antialiasing (a triangle filter widened by the factor), chained
one octave at a time. That matches the PIL ``resize(BILINEAR)`` pyramid the reference GKMNet
loader builds, so coarse scales see the same low-pass images in training and inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def half(x: torch.Tensor) -> torch.Tensor:
    """Downscale N x C x H x W by 2 (sizes floor-divided), antialiased bilinear."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling to an exact size (align_corners=False, as the papers' up2)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def build_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Coarse-to-fine pyramid ``[x / 2^(levels-1), ..., x / 2, x]`` by chained halving."""
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(half(pyramid[-1]))
    return pyramid[::-1]
