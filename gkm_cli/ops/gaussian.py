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

:func:`gaussian_conv` applies a bank four ways that agree to float precision:

* ``direct``: 2-D depthwise convolution with every kernel (the reference design),
* ``separable``: a row pass then a column pass per kernel size (exact: kernels are separable),
* ``cascade``: the paper's iterative scheme, one small step per group along each chain
  (only for banks built from steps, like :func:`ggkm_bank`),
* ``fft``: one real FFT per input plane, a product with each kernel's spectrum, one inverse
  FFT per output plane. The input is zero-padded to at least H + R, W + R (R the bank radius)
  so the circular convolution never wraps image content: exact zero-padded convolution.

All use zero padding of the input (what the reference bank does); the cascade works on a canvas
padded once by the bank's radius, so it is exact at the borders too.

:func:`gaussian_group_mix` computes GGKM's group responses ``z_p = sum_q alpha_p[q] (g_{p,q} (x) u)``.
With ``fft`` it mixes the Q atoms' spectra with alpha first (P inverse FFTs per plane instead of
P * Q); the other methods filter with every atom and then mix (the reference order).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ConvMethod = Literal["auto", "direct", "separable", "cascade", "fft"]

#: Methods :func:`gaussian_conv` accepts besides ``auto``.
METHODS: tuple[str, ...] = ("direct", "separable", "cascade", "fft")

#: Upper bound (bytes) on the complex spectra the FFT path holds at once; larger jobs are chunked.
FFT_CHUNK_BYTES = 1 << 28

#: Largest plane (padded pixels) one CPU ``direct`` convolution call sees; bigger planes go in strips.
DIRECT_STRIP_PIXELS = 1 << 18

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
    normalised: np.ndarray = profile / profile.sum()
    return normalised


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

    Atom (p, q) (0-based) has sigma ``step * (p + (q + 1) / Q)``; the step from group p-1 to p along
    chain q is :func:`variance_step` of sigma_p^2 - sigma_{p-1}^2. Atom profiles are the exact
    convolution of their chain's steps, truncated where the tail mass is below :data:`TAIL_MASS`;
    the cascade keeps the untruncated composite, so cascade and direct paths differ by less than
    that mass.
    """
    sigma = np.array([[step * (p + (q + 1) / per_group) for q in range(per_group)] for p in range(groups)])
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
    return GaussianBank(profiles=tuple(profiles), sigmas=tuple(sigmas), groups=group_index, steps=tuple(steps))


# ----------------------------------------------------------------------------------------------
# Application


def _as_planes(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> (N*C) x 1 x H x W: colour folded into the batch (fast on CPU oneDNN)."""
    n, c, h, w = x.shape
    return x.reshape(n * c, 1, h, w)


def _weight(rows: list[tuple[float, ...]], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=x.dtype, device=x.device)


def dense_kernels(bank: GaussianBank, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The bank as one K x 1 x S x S weight (S = 2 radius + 1, smaller kernels centred).

    Networks build it once and keep it as a non-persistent buffer, so it follows ``.to(device)``
    and is never rebuilt or copied from the host in the forward pass.
    """
    size = 2 * bank.radius + 1
    kernels = np.zeros((bank.num_kernels, 1, size, size))
    for k in range(bank.num_kernels):
        k2 = bank.kernel_2d(k)
        pad = (size - k2.shape[0]) // 2
        kernels[k, 0, pad : pad + k2.shape[0], pad : pad + k2.shape[1]] = k2
    return torch.from_numpy(kernels).to(dtype)


def _direct(x: torch.Tensor, bank: GaussianBank, kernels: torch.Tensor | None) -> torch.Tensor:
    """2-D convolution with every kernel, in horizontal strips of at most ``DIRECT_STRIP_PIXELS``.

    Why strips: oneDNN's CPU convolution switches algorithm on large planes, and on some ISAs
    (AVX2, as on AMD EPYC; reproduce with ``ONEDNN_MAX_CPU_ISA=AVX2``) a 21 x 21 bank on one
    1280 x 720 plane runs ~100x slower per pixel than on a 256 x 1280 one. Strips of the
    zero-padded canvas keep every call in the fast regime; each output pixel still sees exactly
    its zero-padded neighbourhood, so the result equals one big call up to float rounding.
    """
    weight = (dense_kernels(bank, x.dtype) if kernels is None else kernels).to(dtype=x.dtype, device=x.device)
    planes = _as_planes(x)
    r = bank.radius
    h, w = planes.shape[-2:]
    rows = max(1, DIRECT_STRIP_PIXELS // (w + 2 * r))
    if x.device.type != "cpu" or h <= rows:
        return F.conv2d(planes, weight, padding=r)
    canvas = F.pad(planes, (r, r, r, r))
    out = planes.new_empty(planes.shape[0], weight.shape[0], h, w)
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        out[:, :, top:bottom] = F.conv2d(canvas[:, :, top : bottom + 2 * r], weight)
    return out


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


def fft_length(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast sizes for every FFT library)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


@functools.lru_cache(maxsize=64)
def _axis_spectra(profiles: tuple[tuple[float, ...], ...], length: int, bins: int) -> np.ndarray:
    """K x bins real DFT of each zero-phase (centred at index 0) symmetric profile on ``length``.

    A symmetric kernel placed with its centre at index 0 (wrapping left taps to the end) has a
    real spectrum: ``sum_j p[j] cos(2 pi f (j - c) / length)``. Float64; cached per (bank, size).
    """
    f = np.arange(bins, dtype=np.float64)
    out = np.empty((len(profiles), bins))
    for k, prof in enumerate(profiles):
        p = np.asarray(prof, dtype=np.float64)
        j = np.arange(len(p), dtype=np.float64) - len(p) // 2
        out[k] = np.cos(2.0 * np.pi * np.outer(f, j) / length) @ p
    return out


def _fft_plan(bank: GaussianBank, x: torch.Tensor) -> tuple[int, int, torch.Tensor, torch.Tensor, torch.dtype]:
    """FFT lengths (>= H + R, W + R), per-axis kernel spectra (K x Lh, K x Lw/2+1), compute dtype."""
    h, w = x.shape[-2:]
    lh, lw = fft_length(h + bank.radius), fft_length(w + bank.radius)
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    fh = torch.from_numpy(_axis_spectra(bank.profiles, lh, lh)).to(device=x.device, dtype=real)
    fw = torch.from_numpy(_axis_spectra(bank.profiles, lw, lw // 2 + 1)).to(device=x.device, dtype=real)
    return lh, lw, fh, fw, real


def _fft_apply(planes: torch.Tensor, spectra: torch.Tensor, lh: int, lw: int, h: int, w: int) -> torch.Tensor:
    """planes: B x Lh x Lw/2+1 complex (one per input plane); spectra: B x M x Lh x Lw/2+1 real
    (or 1 x M x ...). Returns B x M x H x W: the inverse FFT of each product, cropped."""
    b, m = planes.shape[0], spectra.shape[1]
    per_plane = 2 * planes.element_size() * planes.shape[-2] * planes.shape[-1]
    chunk = max(1, min(m, FFT_CHUNK_BYTES // max(per_plane * b, 1)))
    if chunk >= m:
        whole: torch.Tensor = torch.fft.irfft2(planes[:, None] * spectra, s=(lh, lw))[..., :h, :w]
        return whole
    out = planes.real.new_empty(b, m, h, w)
    for start in range(0, m, chunk):
        part = spectra[:, start : start + chunk]
        out[:, start : start + chunk] = torch.fft.irfft2(planes[:, None] * part, s=(lh, lw))[..., :h, :w]
    return out


def _fft(x: torch.Tensor, bank: GaussianBank) -> torch.Tensor:
    """Every plane with every kernel through the FFT: (N*C) x K x H x W."""
    h, w = x.shape[-2:]
    lh, lw, fh, fw, real = _fft_plan(bank, x)
    planes = torch.fft.rfft2(_as_planes(x)[:, 0].to(real), s=(lh, lw))
    spectra = (fh[:, :, None] * fw[:, None, :])[None]  # 1 x K x Lh x Lw/2+1, separable kernels
    return _fft_apply(planes, spectra, lh, lw, h, w).to(x.dtype)


def choose_method(bank: GaussianBank, height: int, width: int, device: torch.device) -> ConvMethod:
    """Fastest exact method for one bank, by the rule measured with ``scripts/bench_gaussian.py``.

    Measured on a 2-core AVX-512 CPU (docs/PERFORMANCE.md): oneDNN runs a 1-input-channel 2-D
    convolution with many output kernels (colour folded into the batch) at ~100 GMAC/s, so a
    bank of small kernels (GKMNet's, radius <= 10) goes ``direct`` at every size: the FFT costs
    a fixed ~log(HW) per output plane that a 21 x 21 kernel never reaches. Wide banks (GGKM atoms
    reach 53 taps, radius 26) go ``fft`` once the image has more than ~64 x 64 pixels; below
    that the FFT's padding to H + R dominates and ``direct`` wins. ``separable`` loses to both
    (oneDNN's depthwise column pass is slow) and the cascade pays one launch per step and chain.
    The GPU rule is the same (not yet measured: see docs/PERFORMANCE.md).
    """
    del device
    if bank.radius <= 10 or height * width <= 64 * 64:
        return "direct"
    return "fft"


def gaussian_conv(
    x: torch.Tensor, bank: GaussianBank, method: ConvMethod = "auto", kernels: torch.Tensor | None = None
) -> torch.Tensor:
    """Convolve every channel of N x C x H x W with every kernel: returns N x C x K x H x W.

    Zero padding; output has the input's size. ``method`` picks the implementation (they agree
    to ~1e-6 on [0, 1] data); ``auto`` uses :func:`choose_method`. ``kernels``: the bank's
    :func:`dense_kernels`, prebuilt (the ``direct`` path builds them itself otherwise).
    """
    if method == "auto":
        method = choose_method(bank, x.shape[-2], x.shape[-1], x.device)
    n, c, h, w = x.shape
    if method == "direct":
        out = _direct(x, bank, kernels)
    elif method == "separable":
        out = _separable(x, bank)
    elif method == "cascade":
        out = _cascade(x, bank)
    elif method == "fft":
        out = _fft(x, bank)
    else:
        raise ValueError(f"unknown Gaussian convolution method {method!r}")
    return out.reshape(n, c, bank.num_kernels, h, w)


def gaussian_group_mix(
    x: torch.Tensor,
    bank: GaussianBank,
    alpha: torch.Tensor,
    method: ConvMethod = "auto",
    kernels: torch.Tensor | None = None,
) -> torch.Tensor:
    """GGKM group responses: ``z[n, c, p] = sum_q alpha[n, p, q] (g_{p,q} (x) x[n, c])``.

    ``x``: N x C x H x W; ``alpha``: N x P x Q per-image atom weights (P groups of Q atoms, in
    the bank's order). Returns N x C x P x H x W. ``fft`` mixes the atoms' spectra with alpha
    before the inverse FFTs (P per plane instead of P * Q); every other method filters with
    each atom and mixes after (:func:`gaussian_conv` then an einsum: the reference order).
    """
    n, c, h, w = x.shape
    groups = len(bank.groups)
    per_group = bank.num_kernels // groups
    if alpha.shape[-2:] != (groups, per_group) or any(len(g) != per_group for g in bank.groups):
        raise ValueError(f"alpha must be N x {groups} x {per_group} for this bank, got {tuple(alpha.shape)}")
    if method == "auto":
        method = choose_method(bank, h, w, x.device)
    if method != "fft":
        atoms = gaussian_conv(x, bank, method, kernels).view(n, c, groups, per_group, h, w)
        return torch.einsum("ncpqhw,npq->ncphw", atoms, alpha.to(atoms.dtype))
    lh, lw, fh, fw, real = _fft_plan(bank, x)
    fh = fh.view(groups, per_group, lh)
    fw = fw.view(groups, per_group, -1)
    mixed = torch.einsum("npq,pqh,pqw->nphw", alpha.to(real), fh, fw)  # N x P x Lh x Lw/2+1
    planes = torch.fft.rfft2(x.to(real), s=(lh, lw))  # N x C x Lh x Lw/2+1
    parts = [_fft_apply(planes[i], mixed[i : i + 1], lh, lw, h, w) for i in range(n)]  # C x P x H x W
    out = parts[0][None] if n == 1 else torch.stack(parts)
    return out.to(x.dtype)
