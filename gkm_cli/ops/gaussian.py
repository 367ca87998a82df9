"""Fixed Gaussian kernel banks and the convolution with them (the networks' hot path).

A *bank* is a list of isotropic 2-D kernels, each the outer product of a symmetric 1-D profile
that sums to 1. Sigma is the usual standard deviation in pixels, ``exp(-x^2 / (2 sigma^2))``
(the reference GKMNet code's convention; the TPAMI paper's Eq. 3 drops the 2).

Two banks are built here:

* :func:`gkm_bank` -- GKMNet's 21 Gaussians, sigma = 0.25 i, supports 3,3,3,5,5,...,21,21
  (``reference_gkmnet.md`` 1.2), truncated and renormalised. The delta is not part of the bank:
  the networks feed the unfiltered image next to it.
* :func:`ggkm_bank` -- GGKMNet's P x Q atoms. The paper's sigma formula is garbled, so we define
  the atoms so that its *iterative* construction (IGGCM) is exact: atom (p, q) is atom (p-1, q)
  convolved with a small sampled Gaussian step, so sigma_{p,q}^2 = sigma_{p-1,q}^2 + s_{p,q}^2.
  Sigmas are 0.25 (p - 1 + q / Q): group p spreads between GKMNet's sigma_{p-1} and sigma_p,
  so the bank keeps GKMNet's coverage (near-delta up to 5.25 px) with Q = 4 atoms per group.

:func:`gaussian_conv` applies a bank three ways that agree to float precision:

* ``direct``: 2-D depthwise convolution with every kernel (the reference design; slow),
* ``separable``: a row pass then a column pass per kernel size (exact: kernels are separable),
* ``cascade``: the paper's iterative scheme, one small step per group along each chain
  (only for banks built from steps, like :func:`ggkm_bank`).

All three use zero padding of the input (what the reference bank does), computed on a canvas
padded once by the bank's radius, so the cascade is exact at the borders too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ConvMethod = Literal["auto", "direct", "separable", "cascade"]

#: Tail mass below which a cascaded profile is truncated (its effect on [0, 1] images is < 1e-6).
TAIL_MASS = 1e-6


def gaussian_profile(sigma: float, size: int) -> np.ndarray:
    """Sampled, normalised 1-D Gaussian of ``size`` taps (odd) and std ``sigma`` pixels."""
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {size}")
    x = np.arange(size, dtype=np.float64) - size // 2
    if sigma <= 0:
        profile = (x == 0).astype(np.float64)
    else:
        profile = np.exp(-(x**2) / (2.0 * sigma**2))
    return profile / profile.sum()


@dataclass(frozen=True)
class GaussianBank:
    """An ordered set of isotropic separable kernels.

    ``profiles[k]`` is kernel k's 1-D profile (odd length, sums to 1); its 2-D kernel is the outer
    product. ``sigmas[k]`` is its standard deviation in pixels. ``groups`` partitions kernel
    indices into groups of equal support (GGKM groups; singletons for GKM). ``steps``, when set,
    holds ``steps[p][q]``: the 1-D step profile that turns atom (p-1, q) into atom (p, q), so the
    bank can be applied by the cascade.
    """

    profiles: tuple[tuple[float, ...], ...]
    sigmas: tuple[float, ...]
    groups: tuple[tuple[int, ...], ...]
    steps: tuple[tuple[tuple[float, ...], ...], ...] | None = None

    @property
    def num_kernels(self) -> int:
        return len(self.profiles)

    @property
    def radius(self) -> int:
        """Largest half-width of any kernel, in pixels."""
        return max(len(p) // 2 for p in self.profiles)

    def kernel_2d(self, k: int) -> np.ndarray:
        p = np.asarray(self.profiles[k])
        return np.outer(p, p)


def gkm_bank(num: int = 21, step: float = 0.25) -> GaussianBank:
    """GKMNet's bank: sigma_i = step * i, support 3 for i <= 3 then growing by 2 every 2 kernels."""
    sigmas = tuple(step * i for i in range(1, num + 1))
    sizes = tuple(3 if i <= 3 else 2 * ((i - 2) // 2) + 3 for i in range(1, num + 1))
    profiles = tuple(tuple(gaussian_profile(s, n).tolist()) for s, n in zip(sigmas, sizes))
    return GaussianBank(profiles=profiles, sigmas=sigmas, groups=tuple((k,) for k in range(num)))


def _truncate(profile: np.ndarray, tail: float) -> np.ndarray:
    """Smallest centred crop whose outside mass is below ``tail`` (odd length kept)."""
    c = len(profile) // 2
    for r in range(c + 1):
        if 1.0 - profile[c - r : c + r + 1].sum() < tail:
            return profile[c - r : c + r + 1]
    return profile


def variance_step(variance: float) -> np.ndarray:
    """A small symmetric kernel whose discrete variance is exactly ``variance`` (pixels^2).

    Variances add under convolution, so chaining such steps gives atoms whose sigma is exact.
    Narrow steps are the 3-tap [v/2, 1 - v, v/2] (a sampled Gaussian that narrow would be far off
    its nominal variance); wider ones are sampled Gaussians (accurate to < 1e-3 for sigma > 0.7).
    """
    if variance <= 0.5:
        return np.array([variance / 2, 1.0 - variance, variance / 2])
    s = math.sqrt(variance)
    return gaussian_profile(s, 2 * math.ceil(3 * s) + 1)


def ggkm_bank(groups: int = 21, per_group: int = 4, step: float = 0.25) -> GaussianBank:
    """GGKMNet's P x Q atoms built as chains of small Gaussian steps (see module doc).

    Atom (p, q) (0-based) has sigma ``step * (p + (q + 1) / Q)``; the step from group p-1 to p
    along chain q is :func:`variance_step` of sigma_p^2 - sigma_{p-1}^2. Atom profiles are the exact convolution of their chain's steps, truncated where
    the tail mass is below :data:`TAIL_MASS`; the cascade keeps the untruncated composite, so
    cascade and direct paths differ by less than that mass.
    """
    sigma = np.array(
        [[step * (p + (q + 1) / per_group) for q in range(per_group)] for p in range(groups)]
    )
    steps: list[tuple[tuple[float, ...], ...]] = []
    profiles: list[tuple[float, ...]] = []
    sigmas: list[float] = []
    chains = [np.ones(1) for _ in range(per_group)]
    for p in range(groups):
        group_steps = []
        for q in range(per_group):
            previous = sigma[p - 1, q] if p > 0 else 0.0
            step_profile = variance_step(sigma[p, q] ** 2 - previous**2)
            group_steps.append(tuple(step_profile.tolist()))
            chains[q] = np.convolve(chains[q], step_profile)
            profiles.append(tuple(_truncate(chains[q], TAIL_MASS).tolist()))
            sigmas.append(float(sigma[p, q]))
        steps.append(tuple(group_steps))
    # Every atom of a group shares the group's support (the paper's S_p): pad to the widest.
    for p in range(groups):
        idx = range(p * per_group, (p + 1) * per_group)
        width = max(len(profiles[k]) for k in idx)
        for k in idx:
            pad = (width - len(profiles[k])) // 2
            profiles[k] = tuple([0.0] * pad + list(profiles[k]) + [0.0] * pad)
    group_index = tuple(tuple(range(p * per_group, (p + 1) * per_group)) for p in range(groups))
    return GaussianBank(
        profiles=tuple(profiles), sigmas=tuple(sigmas), groups=group_index, steps=tuple(steps)
    )


# ----------------------------------------------------------------------------------------------
# Application


def _as_planes(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> (N*C) x 1 x H x W: colour folded into the batch (fast on CPU oneDNN)."""
    n, c, h, w = x.shape
    return x.reshape(n * c, 1, h, w)


def _weight(rows: list[tuple[float, ...]], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=x.dtype, device=x.device)


def _direct(x: torch.Tensor, bank: GaussianBank) -> torch.Tensor:
    size = 2 * bank.radius + 1
    kernels = np.zeros((bank.num_kernels, 1, size, size))
    for k in range(bank.num_kernels):
        k2 = bank.kernel_2d(k)
        pad = (size - k2.shape[0]) // 2
        kernels[k, 0, pad : pad + k2.shape[0], pad : pad + k2.shape[1]] = k2
    weight = torch.from_numpy(kernels).to(dtype=x.dtype, device=x.device)
    return F.conv2d(_as_planes(x), weight, padding=bank.radius)


def _size_runs(bank: GaussianBank) -> list[range]:
    """Consecutive kernel indices sharing one support size (banks are ordered by size)."""
    runs: list[range] = []
    start = 0
    for k in range(1, bank.num_kernels + 1):
        if k == bank.num_kernels or len(bank.profiles[k]) != len(bank.profiles[start]):
            runs.append(range(start, k))
            start = k
    return runs


def _separable(x: torch.Tensor, bank: GaussianBank) -> torch.Tensor:
    """Row pass (one ungrouped conv per size run) then depthwise column pass."""
    planes = _as_planes(x)
    outs = []
    for run in _size_runs(bank):
        size = len(bank.profiles[run.start])
        r = size // 2
        taps = _weight([bank.profiles[k] for k in run], planes)
        rows = F.conv2d(planes, taps.view(len(run), 1, 1, size), padding=(0, r))
        outs.append(F.conv2d(rows, taps.view(len(run), 1, size, 1), padding=(r, 0), groups=len(run)))
    return torch.cat(outs, dim=1)


def _cascade(x: torch.Tensor, bank: GaussianBank) -> torch.Tensor:
    """IGGCM: z_{p,q} = step_{p,q} (x) z_{p-1,q}, on a canvas zero-padded once, 'valid' convs."""
    if bank.steps is None:
        raise ValueError("this bank is not built from steps; use 'direct' or 'separable'")
    planes = _as_planes(x)
    per_group = len(bank.steps[0])
    radii = [[len(s) // 2 for s in group] for group in bank.steps]
    margin = [sum(radii[p][q] for p in range(len(radii))) for q in range(per_group)]
    h, w = planes.shape[-2:]
    out = planes.new_empty(planes.shape[0], bank.num_kernels, h, w)
    for q in range(per_group):
        canvas = F.pad(planes, (margin[q],) * 4)
        left = margin[q]
        for p, group in enumerate(bank.steps):
            taps = _weight([group[q]], planes)
            size = taps.shape[-1]
            canvas = F.conv2d(canvas, taps.view(1, 1, 1, size))
            canvas = F.conv2d(canvas, taps.view(1, 1, size, 1))
            left -= size // 2
            out[:, p * per_group + q] = canvas[:, 0, left : left + h, left : left + w]
    return out


def choose_method(bank: GaussianBank, height: int, width: int, device: torch.device) -> str:
    """Documented rule, from ``scripts/bench_gaussian.py`` on a 2-core CPU (docs/PERFORMANCE.md).

    oneDNN runs a 1-input-channel 2-D convolution (colour folded into the batch) about as fast as
    two 1-D passes while kernels stay small (GKMNet's bank, at most 21 x 21), so small banks go
    direct; wide banks (GGKM atoms reach 53 taps) go separable. The cascade does the fewest
    MACs but one small convolution per step and chain, which loses on launch overhead.
    """
    del height, width, device
    return "direct" if bank.radius <= 10 else "separable"


def gaussian_conv(x: torch.Tensor, bank: GaussianBank, method: ConvMethod = "auto") -> torch.Tensor:
    """Convolve every channel of N x C x H x W with every kernel: returns N x C x K x H x W.

    Zero padding; output has the input's size. ``method`` picks the implementation (they agree
    to ~1e-6 on [0, 1] data); ``auto`` uses :func:`choose_method`.
    """
    if method == "auto":
        method = choose_method(bank, x.shape[-2], x.shape[-1], x.device)  # type: ignore[assignment]
    n, c, h, w = x.shape
    if method == "direct":
        out = _direct(x, bank)
    elif method == "separable":
        out = _separable(x, bank)
    elif method == "cascade":
        out = _cascade(x, bank)
    else:
        raise ValueError(f"unknown Gaussian convolution method {method!r}")
    return out.view(n, c, bank.num_kernels, h, w)
