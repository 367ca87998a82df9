"""Training losses of the GKM family, as pure functions of network outputs and targets.

GGKMNet (TPAMI 2024, Sec. 4.4, eqs. 17-21)::

    total = L_MSE + 0.1 L_FR + 0.1 L_SSIM + 0.1 L_SR,   each L = sum_t w_t * term(x(t), x_GT(t))

with ``w_t = 2^(1-t)``. The scale recurrence runs coarse to fine (x(t) uses up2(x(t-1))), so
t = 1 is the COARSEST scale and the literal weights are 1, 0.5, 0.25 from coarse to fine (the
finest estimate, the one we output, weighs least). We follow the paper by default and make the
weights a setting (``LossConfig.scale_weights``, coarse -> fine) so "finest first" (0.25, 0.5, 1)
is one flag away. Per-scale terms are means over pixels (the paper writes norms; means keep the
weights independent of patch size). GT and input pyramids use
:func:`gkm_cli.ops.pyramid.build_pyramid`, the resampling the networks use at inference.

GKMANet: the same without the self-reconstruction term. GKMNet (reference code, see
reference_gkmnet.md 1.8): sum over scales of MSE (equal weights); after ``ssim_phase_start``
steps, cycles of ``ssim_phase_period`` steps whose first half uses sum(1 - SSIM) instead.

Optional terms for every recipe (weights 0 by default, so the recipes above are unchanged), on
the finest scale only (the image we output; LPIPS needs >= 32 px, which the coarse scales of a
128 px patch barely have):

* ``lpips``: LPIPS v0.1 AlexNet (:mod:`gkm_cli.metrics.lpips`, frozen, no gradient to its
  weights) of output vs target, inputs mapped to [-1, 1]; mean over the batch.
* ``sharp`` (do no harm): mean over all pixels and channels of ``mask * |output - input|`` with
  ``mask`` = CoC radius < ``sharp_radius`` px (the synthesis knows the CoC per pixel). It pulls
  the network towards the identity where the input is already sharp: the sharpest inputs were
  the shipped model's worst case. Pixels of unknown CoC (real pairs: +inf) never count.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

from gkm_cli.nets.base import DeblurOutput
from gkm_cli.nets.registry import get_spec
from gkm_cli.ops.pyramid import build_pyramid
from gkm_cli.training.config import LossConfig

__all__ = [
    "RECIPES",
    "Recipe",
    "fft_l1",
    "gaussian_taps",
    "loss_terms",
    "lpips_term",
    "paper_scale_weights",
    "recipe_for",
    "sharp_term",
    "ssim_loss",
    "ssim_map_mean",
]


def gaussian_taps(
    size: int, sigma: float, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised 1-D Gaussian profile of ``size`` taps (odd), ``sigma`` in pixels."""
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable depthwise 'valid' correlation of N x C x H x W with a 1-D profile."""
    c = x.shape[1]
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map_mean(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Differentiable SSIM per image, shape (N,): Gaussian window (11 taps, sigma 1.5 px),
    'valid' filtering, population statistics, mean over pixels then channels (the convention of
    gkm_cli.metrics.ssim with the gaussian11 window). Images smaller than the window use the
    largest odd window that fits (same sigma, renormalised), so the coarse scale of a small patch
    still has an SSIM term."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two N x C x H x W tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    size = min(window, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2  # odd
    taps = gaussian_taps(max(size, 1), sigma, device=x.device, dtype=x.dtype)
    n, c = x.shape[:2]
    f = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps)
    mu_x, mu_y, e_xx, e_yy, e_xy = f.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_xy + c1) * (2 * (e_xy - mu_xy) + c2)
    den = (mu_xx + mu_yy + c1) * ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
    return (num / den).mean(dim=(2, 3)).mean(dim=1).reshape(n)


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - SSIM`` (data range 1)."""
    return (1.0 - ssim_map_mean(x, y)).mean()


def fft_l1(x: torch.Tensor, y: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """L1 distance of 2-D spectra: mean over the real and imaginary parts of rfft2(x - y).

    ``norm="ortho"`` (default) is unitary, so the term does not grow with the patch size;
    ``"backward"`` is the unnormalised form of the public reference code (it grows with
    sqrt(H W) and then dominates the other terms at 256 px)."""
    d = torch.fft.rfft2((x - y).float(), norm=norm)
    return torch.view_as_real(d).abs().mean()


def paper_scale_weights(scales: int) -> tuple[float, ...]:
    """GGKMNet's ``w_t = 2^(1-t)``, t = 1 the coarsest: coarse -> fine (1, 0.5, 0.25 for T = 3)."""
    return tuple(2.0 ** (1 - t) for t in range(1, scales + 1))


@dataclass(frozen=True)
class Recipe:
    """What the trainer needs to know about a recipe: the terms it logs (before the optional
    lpips/sharp terms) and whether the forward pass must return the SRM reconstructions."""

    terms: tuple[str, ...]
    reconstruction: bool = False


#: The papers' losses by name (``ModelSpec.loss_recipe`` picks one per architecture).
RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        "ggkmnet": Recipe(("total", "mse", "fft", "ssim", "recon"), reconstruction=True),
        "gkmanet": Recipe(("total", "mse", "fft", "ssim")),
        "gkmnet": Recipe(("total", "mse", "ssim")),
    }
)


def recipe_for(model_name: str, recipe: str = "auto") -> str:
    """The loss recipe for an architecture: ``recipe`` unless "auto", else its spec's ``loss_recipe``."""
    if recipe != "auto":
        return recipe
    name = get_spec(model_name).loss_recipe
    if name is None:
        raise ValueError(f"no loss recipe for {model_name!r}")
    return name


def _sum_terms(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of per-scale loss tensors, added left to right (the builtin ``sum`` would start
    from the int 0 and so not be typed as a tensor; 0 + x is x, so the values are the same)."""
    total: torch.Tensor = functools.reduce(operator.add, parts)
    return total


def _match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop two tensors to their common H x W (pyramid floors vs network ceils at odd sizes)."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return a[..., :h, :w], b[..., :h, :w]


def gkmnet_ssim_phase(step: int, cfg: LossConfig) -> bool:
    """GKMNet's schedule: True when step ``step`` trains on sum(1 - SSIM) instead of MSE."""
    if step < cfg.ssim_phase_start:
        return False
    period = max(2, cfg.ssim_phase_period)
    return (step - cfg.ssim_phase_start) % period < period // 2


def lpips_term(x: torch.Tensor, target: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
    """Mean LPIPS of images in [0,1] (mapped to [-1,1] as LPIPS expects); ``net`` is frozen, the
    gradient flows to ``x`` only."""
    return net(x.float() * 2.0 - 1.0, target.float() * 2.0 - 1.0).mean()


def sharp_term(x: torch.Tensor, blur: torch.Tensor, coc: torch.Tensor, radius: float) -> torch.Tensor:
    """Mean over all pixels of ``|x - blur|`` where the CoC radius (N x 1 x H x W, px) is below
    ``radius``: zero when the network leaves in-focus pixels alone."""
    x, blur = _match(x.float(), blur.float())
    mask = (_match(coc, x)[0] < radius).to(x.dtype)
    return (mask * (x - blur).abs()).mean()


def loss_terms(
    out: DeblurOutput,
    sharp: torch.Tensor,
    blur: torch.Tensor,
    *,
    recipe: str,
    cfg: LossConfig,
    step: int = 0,
    coc: torch.Tensor | None = None,
    lpips_net: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Named loss terms (already summed over scales with their weights) and ``total``.

    ``out.scales`` coarse -> fine; ``sharp``/``blur`` N x 3 x H x W in [0,1] (targets and the
    network input). Terms are fp32 whatever the network ran in. ``coc`` (N x 1 x H x W, px) is
    needed when ``cfg.sharp_weight > 0``, ``lpips_net`` when ``cfg.lpips_weight > 0``.
    """
    terms = _recipe_terms(out, sharp, blur, recipe=recipe, cfg=cfg, step=step)
    finest = out.scales[-1].float()
    if cfg.lpips_weight > 0:
        if lpips_net is None:
            raise ValueError("lpips_weight > 0 needs lpips_net (gkm_cli.metrics.lpips.load_lpips)")
        terms["lpips"] = lpips_term(*_match(finest, sharp.float()), lpips_net)
        terms["total"] = terms["total"] + cfg.lpips_weight * terms["lpips"]
    if cfg.sharp_weight > 0:
        if coc is None:
            raise ValueError("sharp_weight > 0 needs the per-pixel CoC map of each sample (coc)")
        terms["sharp"] = sharp_term(finest, blur, coc.float(), cfg.sharp_radius)
        terms["total"] = terms["total"] + cfg.sharp_weight * terms["sharp"]
    return terms


def _recipe_terms(
    out: DeblurOutput, sharp: torch.Tensor, blur: torch.Tensor, *, recipe: str, cfg: LossConfig, step: int
) -> dict[str, torch.Tensor]:
    """The recipe's own terms (the papers' losses) and their ``total``."""
    xs = [s.float() for s in out.scales]
    n_scales = len(xs)
    gts = build_pyramid(sharp.float(), n_scales)
    if recipe == "gkmnet":
        mse = _sum_terms(F.mse_loss(*_match(x, g)) for x, g in zip(xs, gts))
        ssim = _sum_terms(ssim_loss(*_match(x, g)) for x, g in zip(xs, gts))
        total = ssim if gkmnet_ssim_phase(step, cfg) else mse
        return {"mse": mse, "ssim": ssim, "total": total}
    weights: Sequence[float] = cfg.scale_weights or paper_scale_weights(n_scales)
    if len(weights) != n_scales:
        raise ValueError(f"{len(weights)} scale weights for a {n_scales}-scale network")
    terms: dict[str, torch.Tensor] = {}
    pairs = [_match(x, g) for x, g in zip(xs, gts)]
    terms["mse"] = _sum_terms(w * F.mse_loss(x, g) for w, (x, g) in zip(weights, pairs))
    terms["fft"] = _sum_terms(w * fft_l1(x, g, cfg.fft_norm) for w, (x, g) in zip(weights, pairs))
    terms["ssim"] = _sum_terms(w * ssim_loss(x, g) for w, (x, g) in zip(weights, pairs))
    total = terms["mse"] + cfg.fft_weight * terms["fft"] + cfg.ssim_weight * terms["ssim"]
    if recipe == "ggkmnet":
        if out.reconstruction is None:
            raise ValueError("the ggkmnet loss needs out.reconstruction (forward with reconstruct=True)")
        ys = build_pyramid(blur.float(), n_scales)
        terms["recon"] = _sum_terms(
            w * F.l1_loss(*_match(r.float(), y)) for w, r, y in zip(weights, out.reconstruction, ys)
        )
        total = total + cfg.recon_weight * terms["recon"]
    elif recipe != "gkmanet":
        raise ValueError(f"unknown loss recipe {recipe!r}")
    terms["total"] = total
    return terms
