"""GKMNet as the authors' released code computes it, so their checkpoints run unchanged.

Our GKMNet gives every colour all K = kernels + 1 bank kernels (delta first), weight map m
pairing with kernel m: channel ``o = c K + m`` of the 3K filtered channels is colour c, kernel m.
The released code pairs them differently (``reference_gkmnet.md`` 1.2, 1.5, 2); in all three
layouts channel o is multiplied by weight map ``o mod K`` (the code tiles the maps with
``cat([w, w, w])``), so a layout is just (colour, kernel) per channel:

* ``paper`` (ours, the default): colour ``o // K``, kernel ``o mod K``.
* ``official`` (csZcWu/GKMNet, the released DPDD checkpoint): the bank weight is built by an
  element-wise repeat, so with ``groups=3`` channel o is colour ``o // K`` with kernel ``o // 3``:
  red only meets kernels 0..7 of 22, green 7..14, blue 14..21 (the QUIRK). Zero padding.
* ``updating`` (csZcWu/GKMNet_updating): separable kernels with reflect padding of each
  kernel's own radius, output kernel-major: channel o is colour ``o mod 3`` with kernel ``o // 3``.

The two released layouts keep the released channel order, so their 1 x 1 summation weights load
without any permutation. Their state dicts are identical in keys and shapes: which layout a
checkpoint expects cannot be detected, it is recorded at import (``gkm models import --variant``).

``batch_norm="image"``: the released test script never calls ``eval()``, so its published
numbers normalise every BatchNorm with the statistics of the one test image (batch 1) instead
of the running statistics. :func:`use_image_statistics` reproduces that per image, whatever the
batch size, without touching (or updating) the stored running statistics.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.errors import ModelError
from gkm_cli.ops.gaussian import GaussianBank, gaussian_conv

BankLayout = Literal["paper", "official", "updating"]
BatchNormMode = Literal["running", "image"]
BANK_LAYOUTS: tuple[str, ...] = ("paper", "official", "updating")
BATCH_NORM_MODES: tuple[str, ...] = ("running", "image")


def check_options(bank_layout: str, batch_norm: str, architecture: str = "gkmnet") -> None:
    if architecture != "gkmnet" and (bank_layout, batch_norm) != ("paper", "running"):
        raise ModelError(f"{architecture}: bank_layout and batch_norm are options of gkmnet only")
    if bank_layout not in BANK_LAYOUTS:
        raise ModelError(f"gkmnet: bank_layout must be one of {', '.join(BANK_LAYOUTS)}, got {bank_layout!r}")
    if batch_norm not in BATCH_NORM_MODES:
        raise ModelError(f"gkmnet: batch_norm must be one of {', '.join(BATCH_NORM_MODES)}, got {batch_norm!r}")


def channel_table(layout: str, k: int) -> tuple[list[int], list[int]]:
    """(colour, kernel) of each of the 3K filtered channels, in the layout's channel order."""
    channels = range(3 * k)
    if layout == "paper":
        return [o // k for o in channels], [o % k for o in channels]
    if layout == "official":
        return [o // k for o in channels], [o // 3 for o in channels]
    if layout == "updating":
        return [o % 3 for o in channels], [o // 3 for o in channels]
    raise ModelError(f"unknown bank layout {layout!r}; valid: {', '.join(BANK_LAYOUTS)}")


def effective_sigmas(layout: str, sigmas: torch.Tensor) -> torch.Tensor:
    """Per weight map m: the mean sigma of the kernels it meets over the three colours (for the
    blur map; in the paper layout that is kernel m's own sigma)."""
    k = sigmas.numel()
    _, kernels = channel_table(layout, k)
    out = torch.zeros(k, dtype=sigmas.dtype)
    for o, kernel in enumerate(kernels):
        out[o % k] += sigmas[kernel] / 3
    return out


def _reflect_bank(x: torch.Tensor, bank: GaussianBank) -> torch.Tensor:
    """Every plane with every kernel, separable, each reflect-padded by its own radius: N x C x K-1 x H x W."""
    n, c, h, w = x.shape
    planes = x.reshape(n * c, 1, h, w)
    outs = []
    for profile in bank.profiles:
        r = len(profile) // 2
        taps = torch.tensor(profile, dtype=x.dtype, device=x.device)
        # Reflect needs r < H, W; the released code fails on smaller inputs, we repeat the edge.
        mode = "reflect" if r < min(h, w) else "replicate"
        padded = F.pad(planes, (r, r, r, r), mode=mode)
        rows = F.conv2d(padded, taps.view(1, 1, 1, -1))
        outs.append(F.conv2d(rows, taps.view(1, 1, -1, 1)))
    return torch.cat(outs, 1).reshape(n, c, bank.num_kernels, h, w)


def filtered_channels(layout: str, x: torch.Tensor, bank: GaussianBank, dense: torch.Tensor | None) -> torch.Tensor:
    """N x 3 x H x W -> N x 3K x H x W: the layout's filtered channels, in its order (delta = x)."""
    if layout == "updating":
        gauss = _reflect_bank(x, bank)
    else:  # zero padding, the reference 2-D bank
        gauss = gaussian_conv(x, bank, "direct", dense)
    full = torch.cat([x[:, :, None], gauss], 2)  # N x 3 x K x H x W
    colours, kernels = channel_table(layout, full.shape[2])
    return full[:, colours, kernels]


def layout_mix_and_sum(
    layout: str,
    y_t: torch.Tensor,
    x_up: torch.Tensor,
    weights: torch.Tensor,
    bank: GaussianBank,
    dense: torch.Tensor | None,
    summation: nn.Conv2d,
) -> torch.Tensor:
    """``summation(cat[F(y) * tile3(w_y), F(x_up) * tile3(w_x)])`` with F the layout's bank."""
    k = weights.shape[1] // 2
    x_up = x_up.to(y_t.dtype)
    mixed = [
        filtered_channels(layout, u, bank, dense) * weights[:, i * k : (i + 1) * k].repeat(1, 3, 1, 1)
        for i, u in enumerate((y_t, x_up))
    ]
    out: torch.Tensor = summation(torch.cat(mixed, 1))
    return out


class ImageStatsBatchNorm(nn.BatchNorm2d):
    """BatchNorm that always normalises with the statistics of each image on its own, as the
    released GKMNet test script's train-mode BN does with batch 1. Running statistics stay in
    the state dict untouched. ``training`` stays True so fast paths never fold the running stats."""

    def train(self, mode: bool = True) -> ImageStatsBatchNorm:
        return super().train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def use_image_statistics(model: nn.Module) -> None:
    """Switch every BatchNorm2d of ``model`` to :class:`ImageStatsBatchNorm` (parameters kept)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = ImageStatsBatchNorm
            m.training = True
