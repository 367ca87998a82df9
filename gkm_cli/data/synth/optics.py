"""Thin-lens circle of confusion, aperture PSFs and the convolution that applies them."""

from __future__ import annotations

import math

import cv2
import numpy as np

from gkm_cli.data.synth.config import APERTURE_KINDS, Aperture
from gkm_cli.errors import UsageError
from gkm_cli.ops.gaussian import fft_length  # the one 2-3-5-smooth FFT size

_F32 = np.float32


def thin_lens_coc_scale(
    focal_length_mm: float, f_number: float, focus_distance_m: float, pixel_pitch_um: float
) -> float:
    """``coc_scale`` of a thin lens: CoC radius in pixels per dioptre (1/m) away from focus.

    ``radius_px = coc_scale * |1/S1 - 1/S|`` (S, S1 in metres) is exact for a thin lens.
    """
    f = focal_length_mm * 1e-3
    if not (f > 0 and f_number > 0 and focus_distance_m > f and pixel_pitch_um > 0):
        raise UsageError("thin lens needs f > 0, N > 0, focus distance > f and pixel pitch > 0")
    aperture = f / f_number
    c_per_dioptre = aperture * f * focus_distance_m / (focus_distance_m - f)  # metres * metres
    return float(c_per_dioptre / (2.0 * pixel_pitch_um * 1e-6))


def radius_levels(max_radius: float, min_step: float = 0.5, rel_step: float = 0.15) -> np.ndarray:
    """Quantised radii ``0 = r0 < r1 < ... <= max_radius`` with ``r[k+1] - r[k] = max(min_step, rel_step * r[k])``."""
    levels = [0.0]
    while levels[-1] < max_radius - 1e-6:
        levels.append(min(levels[-1] + max(min_step, rel_step * levels[-1]), max_radius))
    return np.asarray(levels, dtype=np.float64)


def support(radius: float, ap: Aperture) -> int:
    if ap.kind in ("disk", "polygon"):
        reach = 1.2 * radius + 1.0
    elif ap.kind == "gengauss":
        alpha = radius * math.sqrt(math.gamma(2.0 / ap.beta) / (2.0 * math.gamma(4.0 / ap.beta)))
        reach = alpha * math.log(1e3) ** (1.0 / ap.beta) + 1.0
    else:  # gaussian, mix: 3 sigma (sigma = r / 2), at least the disk
        reach = max(1.5 * radius, 1.2 * radius + 1.0) + 1.0
    return int(math.ceil(min(reach, 2.5 * radius + 2.0)))


def psf_kernel(radius: float, aperture: Aperture = Aperture()) -> np.ndarray:
    """A (2R+1) x (2R+1) float32 PSF of CoC ``radius`` pixels that sums to 1 (1 x 1 delta at 0).

    Disks and polygons have anti-aliased edges (linear coverage over one pixel); polygons keep
    the disk's area; Gaussians use sigma = r/2 and generalised Gaussians the same second moment.
    """
    r = float(radius)
    if not math.isfinite(r) or r < 0:
        raise UsageError(f"PSF radius must be finite and >= 0, got {radius}")
    if r < 1e-3:
        return np.ones((1, 1), dtype=_F32)
    ap = aperture
    half = support(r, ap)
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    d = np.hypot(x, y)

    def disk() -> np.ndarray:
        return np.clip(r + 0.5 - d, 0.0, 1.0)

    def gauss(sigma: float) -> np.ndarray:
        return np.exp(-0.5 * (d / max(sigma, 1e-6)) ** 2)

    if ap.kind == "disk":
        w = disk()
    elif ap.kind == "polygon":
        n = int(ap.blades)
        apothem = r * math.sqrt(math.pi / (n * math.tan(math.pi / n)))
        angles = ap.rotation + 2.0 * math.pi * np.arange(n) / n
        proj = np.max(x[None] * np.cos(angles)[:, None, None] + y[None] * np.sin(angles)[:, None, None], axis=0)
        w = np.clip(apothem + 0.5 - proj, 0.0, 1.0)
    elif ap.kind == "gaussian":
        w = gauss(r / 2.0)
    elif ap.kind == "gengauss":
        alpha = r * math.sqrt(math.gamma(2.0 / ap.beta) / (2.0 * math.gamma(4.0 / ap.beta)))
        w = np.exp(-((d / alpha) ** ap.beta))
    elif ap.kind == "mix":
        a, b = disk(), gauss(r / 2.0)
        w = (1.0 - ap.mix) * a / a.sum() + ap.mix * b / b.sum()
    else:
        raise UsageError(f"unknown aperture kind {ap.kind!r}; kinds: {APERTURE_KINDS}")
    if ap.ring and ap.kind in ("disk", "polygon", "mix"):
        w = w * np.maximum(1.0 + ap.ring * np.minimum(d / r, 1.0) ** 2, 0.0)
    total = w.sum()
    if not total > 0:
        return np.ones((1, 1), dtype=_F32)
    return (w / total).astype(_F32)


_SPATIAL_MAX = 11  # OpenCV switches to a slow DFT above 11 x 11 kernels; use torch's FFT there


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve H x W x C float32 with a square odd-sized kernel, reflecting at the borders.

    Small kernels use ``cv2.filter2D`` (spatial); larger ones a float32 FFT (``torch.fft``,
    about 4x faster than OpenCV's DFT path on 256 x 256 x 4).
    """
    k = kernel.shape[0]
    if k == 1:
        return image * kernel[0, 0]
    if k <= _SPATIAL_MAX:
        return cv2.filter2D(image, -1, kernel[::-1, ::-1], borderType=cv2.BORDER_REFLECT)
    import torch

    half = k // 2
    h, w = image.shape[:2]
    # Reflect by the kernel radius, then zero-pad to an FFT-friendly size: the circular wrap
    # never reaches the central h x w window.
    ph, pw = fft_length(h + 2 * half), fft_length(w + 2 * half)
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REFLECT)
    padded = cv2.copyMakeBorder(padded, 0, ph - h - 2 * half, 0, pw - w - 2 * half, cv2.BORDER_CONSTANT, value=0)
    if padded.ndim == 2:
        padded = padded[..., None]
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))
    kp = np.zeros((ph, pw), dtype=_F32)
    kp[:k, :k] = kernel
    kp = np.roll(kp, (-half, -half), axis=(0, 1))
    spec = torch.fft.rfft2(x) * torch.fft.rfft2(torch.from_numpy(kp))
    y = torch.fft.irfft2(spec, s=(ph, pw)).numpy()
    out = y[:, half : half + h, half : half + w].transpose(1, 2, 0)
    return np.ascontiguousarray(out if image.ndim == 3 else out[..., 0])
