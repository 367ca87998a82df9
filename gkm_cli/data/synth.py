"""Physically based synthetic defocus, rendered on the fly from sharp photos (numpy + OpenCV).

The model, in order (all images H x W x 3 float32; sRGB in [0,1] unless said otherwise):

1. Geometry: an *inverse depth* map ``u`` (1/distance in any unit; larger = nearer). A disparity
   map is already inverse depth up to an offset and a scale, and both cancel below. Maps come
   from the caller (a real disparity map, invalid pixels filled with their nearest valid value),
   from :func:`random_inv_depth` (smooth layers with sharp occlusion edges, planes, constants)
   or from :func:`dead_leaves` (each disc its own depth, in occlusion order).
2. Thin lens: the circle of confusion of a point at distance S when focused at S1 is
   ``c = A f / (S1 - f) * |S - S1| / S = A f S1 / (S1 - f) * |1/S1 - 1/S|``, so its radius in
   pixels is ``coc_scale * |u - focus|`` with ``coc_scale = A f S1 / (2 p (S1 - f))``
   (:func:`thin_lens_coc_scale`). Radii are clipped at ``max_radius`` (pixels, output scale).
3. PSF: per layer, a kernel of that radius that sums to 1: an anti-aliased disk (the base),
   a regular polygon with 5-9 blades, a Gaussian, a generalised Gaussian, or a disk/Gaussian
   mix; disks and polygons may have a brighter or darker rim (spherical aberration). All kinds
   share the second moment of the disk of the same radius (Gaussian sigma = r/2).
4. Layered compositing in linear light: signed radii ``coc_scale * (u - focus)`` are quantised
   into layers (steps of max(0.5 px, 15 %)), then, far to near, each layer's premultiplied
   colour and alpha are blurred with its PSF and laid *over* the result. Each layer is first
   extended a little behind the nearer layers (nearest-pixel fill) so a blurred background does
   not darken or take the colour of an in-focus occluder, and an in-focus occluder keeps its
   edge exactly. The sum is divided by the accumulated alpha.
5. Camera: re-encode to sRGB; Poisson-Gaussian noise in linear light (variance
   ``shot * x + read^2``); then scale each channel so its mean equals the sharp image's (the
   concave sRGB curve brightens blurred high-contrast areas: 3 levels of 255 on average and up
   to 13 on astronaut crops; clipped noise adds about 1; a network would learn that shift as a
   colour change); a JPEG round trip (quality 60-95) with some probability.

Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from gkm_cli.data.layouts import read_native, to_float
from gkm_cli.errors import DataError, UsageError

ApertureKind = Literal["disk", "polygon", "gaussian", "gengauss", "mix"]
APERTURE_KINDS: tuple[str, ...] = ("disk", "polygon", "gaussian", "gengauss", "mix")
DEPTH_KINDS: tuple[str, ...] = ("layers", "plane", "constant")

_F32 = np.float32


# ============================================================================ settings


@dataclass(frozen=True)
class Aperture:
    """Shape of the PSF. ``rotation`` in radians; ``beta`` is the generalised-Gaussian exponent
    (2 = Gaussian, large = disk); ``ring`` weights the aperture by ``1 + ring * (d/r)^2``
    (positive: bright rim); ``mix`` is the Gaussian share of a ``mix`` kernel."""

    kind: ApertureKind = "disk"
    blades: int = 6
    rotation: float = 0.0
    beta: float = 2.0
    ring: float = 0.0
    mix: float = 0.5


@dataclass(frozen=True)
class Lens:
    """Thin-lens state in inverse-depth units: ``focus`` is the in-focus inverse depth and
    ``coc_scale`` the CoC radius in pixels per unit of inverse depth away from it."""

    focus: float
    coc_scale: float
    aperture: Aperture = Aperture()


@dataclass(frozen=True)
class SynthConfig:
    """Distribution of the synthetic defocus. Radii in pixels of the output image."""

    max_radius: float = 12.0
    """Largest CoC radius anywhere (clip), pixels."""
    min_peak_radius: float = 1.0
    """The largest CoC of a blurred sample is drawn uniformly in [min_peak_radius, max_radius]."""
    in_focus_prob: float = 0.2
    """Share of samples with no blur at all (noise and JPEG still apply)."""
    focus_on_content_prob: float = 0.7
    """Focus at the depth of a random pixel (else anywhere around the scene's depth range)."""
    aperture_probs: tuple[tuple[str, float], ...] = (
        ("disk", 0.4), ("polygon", 0.25), ("mix", 0.15), ("gengauss", 0.1), ("gaussian", 0.1),
    )
    blades: tuple[int, int] = (5, 9)
    ring: tuple[float, float] = (-0.3, 0.5)
    gengauss_beta: tuple[float, float] = (1.2, 6.0)
    depth_probs: tuple[tuple[str, float], ...] = (("layers", 0.6), ("plane", 0.25), ("constant", 0.15))
    layer_min_step: float = 0.5
    """Radius quantisation step near focus, pixels."""
    layer_rel_step: float = 0.15
    """Radius quantisation step as a share of the radius (coarser for large blur)."""
    linear_light: bool = True
    """Blur in linear light (inverse sRGB before, sRGB after)."""
    match_mean: bool = True
    """Scale each blurred channel so its mean equals the sharp one (after noise, before JPEG)."""
    noise_prob: float = 0.85
    shot_noise: tuple[float, float] = (2e-5, 2e-3)
    """Poisson part: variance per unit of linear signal, log-uniform range."""
    read_noise: tuple[float, float] = (2e-4, 4e-3)
    """Gaussian part: standard deviation in linear units, log-uniform range."""
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    dead_leaves_fraction: float = 0.3
    """Share of samples drawn on procedural dead-leaves images instead of photos."""
    dead_leaves_own_depth_prob: float = 0.5
    """Dead-leaves samples that use the discs' occlusion order as depth."""

    def __post_init__(self) -> None:
        if not (0 < self.max_radius <= 64) or not (0 <= self.min_peak_radius <= self.max_radius):
            raise UsageError(f"need 0 <= min_peak_radius <= max_radius <= 64, got {self}")
        for name in ("in_focus_prob", "focus_on_content_prob", "noise_prob", "jpeg_prob",
                     "dead_leaves_fraction", "dead_leaves_own_depth_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"SynthConfig.{name} must be in [0, 1]")
        for kind, p in self.aperture_probs:
            if kind not in APERTURE_KINDS or p < 0:
                raise UsageError(f"bad aperture entry ({kind!r}, {p}); kinds: {APERTURE_KINDS}")
        for kind, p in self.depth_probs:
            if kind not in DEPTH_KINDS or p < 0:
                raise UsageError(f"bad depth entry ({kind!r}, {p}); kinds: {DEPTH_KINDS}")
        if self.layer_min_step <= 0 or self.layer_rel_step < 0:
            raise UsageError("layer steps must be positive")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise UsageError("jpeg_quality must be a range inside [1, 100]")
        if self.blades[0] < 3 or self.blades[1] < self.blades[0]:
            raise UsageError("blades must be a range starting at 3 or more")


@dataclass(frozen=True)
class SynthParams:
    """Everything drawn for one sample (zero noise / quality 0 = not applied)."""

    lens: Lens
    in_focus: bool
    depth_kind: str
    shot_noise: float
    read_noise: float
    jpeg_quality: int
    noise_seed: int


@dataclass(frozen=True, eq=False)
class SynthSample:
    """``blurred`` and ``sharp``: H x W x 3 float32 sRGB in [0,1]; ``coc``: H x W float32 CoC
    radius in pixels actually applied at each pixel (after layer quantisation)."""

    blurred: np.ndarray
    sharp: np.ndarray
    coc: np.ndarray
    params: SynthParams | None = field(default=None, compare=False)


# ============================================================================ colour


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve: sRGB [0,1] -> linear light [0,1] (float32)."""
    x = np.clip(np.asarray(x, dtype=_F32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / _F32(12.92), ((x + _F32(0.055)) / _F32(1.055)) ** _F32(2.4)).astype(_F32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer curve: linear light [0,1] -> sRGB [0,1] (float32, clipped)."""
    x = np.clip(np.asarray(x, dtype=_F32), 0.0, 1.0)
    return np.where(
        x <= 0.0031308, x * _F32(12.92), _F32(1.055) * x ** _F32(1.0 / 2.4) - _F32(0.055)
    ).astype(_F32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W, H x W x 1 or H x W x 3 (or 4) -> contiguous float32 H x W x 3."""
    a = np.asarray(image, dtype=_F32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an H x W x C image with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


# ============================================================================ optics


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


def coc_radius(inv_depth: np.ndarray, lens: Lens, max_radius: float = 12.0) -> np.ndarray:
    """Continuous CoC radius in pixels, ``min(coc_scale * |u - focus|, max_radius)``."""
    u = np.asarray(inv_depth, dtype=_F32)
    return np.minimum(np.abs(_F32(lens.coc_scale) * (u - _F32(lens.focus))), _F32(max_radius))


def radius_levels(max_radius: float, min_step: float = 0.5, rel_step: float = 0.15) -> np.ndarray:
    """Quantised radii ``0 = r0 < r1 < ... <= max_radius`` with ``r[k+1] - r[k] = max(min_step, rel_step * r[k])``."""
    levels = [0.0]
    while levels[-1] < max_radius - 1e-6:
        levels.append(min(levels[-1] + max(min_step, rel_step * levels[-1]), max_radius))
    return np.asarray(levels, dtype=np.float64)


def _support(radius: float, ap: Aperture) -> int:
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
    half = _support(r, ap)
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


# ============================================================================ rendering


def _layer_ids(inv_depth: np.ndarray, lens: Lens, levels: np.ndarray, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    s = np.clip(_F32(lens.coc_scale) * (inv_depth - _F32(lens.focus)), -max_radius, max_radius)
    idx = np.searchsorted((levels[1:] + levels[:-1]) * 0.5, np.abs(s)).astype(np.int32)
    sid = np.where(s < 0, -idx, idx).astype(np.int32)
    return sid, levels[idx].astype(_F32)


def render_defocus(
    sharp: np.ndarray,
    inv_depth: np.ndarray,
    lens: Lens,
    *,
    max_radius: float = 12.0,
    min_step: float = 0.5,
    rel_step: float = 0.15,
    linear_light: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Defocus ``sharp`` (H x W x C sRGB [0,1]) by the scene ``inv_depth`` (H x W, larger = nearer).

    Deterministic; no noise. Returns the blurred H x W x 3 sRGB image and the applied CoC
    radius map (H x W, pixels). See the module docstring for the layered model.
    """
    img = as_rgb(sharp)
    u = np.asarray(inv_depth, dtype=_F32)
    if u.shape != img.shape[:2]:
        raise DataError(f"depth map {u.shape} does not match image {img.shape[:2]}")
    if not np.isfinite(u).all():
        raise DataError("depth map has NaN or Inf values (fill them with fill_invalid first)")
    levels = radius_levels(max_radius, min_step, rel_step)
    sid, coc = _layer_ids(u, lens, levels, max_radius)
    ids = np.unique(sid)
    if ids.size == 1 and ids[0] == 0:
        return np.clip(img, 0.0, 1.0), coc
    lin = srgb_to_linear(img) if linear_light else np.clip(img, 0.0, 1.0)
    h, w = u.shape
    out = np.zeros((h, w, 3), dtype=_F32)
    acc = np.zeros((h, w), dtype=_F32)
    radii = levels[np.abs(ids)]
    nearer_max = np.zeros(ids.size)
    for k in range(ids.size - 2, -1, -1):
        nearer_max[k] = max(nearer_max[k + 1], radii[k + 1])
    flat_ids = sid.ravel()
    order = np.argsort(flat_ids, kind="stable")
    bounds = np.searchsorted(flat_ids[order], ids, side="left").tolist() + [flat_ids.size]
    for k, lid in enumerate(ids):
        members = order[bounds[k] : bounds[k + 1]]  # flat indices of this layer's pixels
        kern = psf_kernel(float(radii[k]), lens.aperture)
        half = kern.shape[0] // 2
        ext = int(math.ceil(radii[k] + nearer_max[k])) + 2 if k < ids.size - 1 else 0
        rows, cols = members // w, members % w
        m = ext + half
        y0, y1 = max(int(rows.min()) - m, 0), min(int(rows.max()) + m + 1, h)
        x0, x1 = max(int(cols.min()) - m, 0), min(int(cols.max()) + m + 1, w)
        sub_mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        sub_mask[rows - y0, cols - x0] = True
        sub_lin = lin[y0:y1, x0:x1]
        rgba = np.zeros(sub_mask.shape + (4,), dtype=_F32)
        rgba[sub_mask, :3] = sub_lin[sub_mask]
        rgba[sub_mask, 3] = 1.0
        if ext > 0:
            nearer = sid[y0:y1, x0:x1] > lid
            if nearer.any():
                dist, lab = cv2.distanceTransformWithLabels(
                    (~sub_mask).view(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
                )
                grow = nearer & (dist <= ext)
                gi = np.flatnonzero(grow)
                if gi.size:
                    src = np.flatnonzero(sub_mask)  # labels number mask pixels in raster order
                    flat = rgba.reshape(-1, 4)
                    flat[gi, :3] = sub_lin.reshape(-1, 3)[src[lab.ravel()[gi] - 1]]
                    flat[gi, 3] = 1.0
        if half > 0:
            rgba = convolve(rgba, kern)
        a = np.clip(rgba[..., 3], 0.0, 1.0)
        o = out[y0:y1, x0:x1]
        keep = 1.0 - a
        o *= keep[..., None]
        o += rgba[..., :3]
        acc[y0:y1, x0:x1] = a + keep * acc[y0:y1, x0:x1]
    covered = acc > 1e-4
    res = np.where(covered[..., None], out / np.maximum(acc, 1e-4)[..., None], lin)
    res = np.clip(res, 0.0, 1.0)
    return (linear_to_srgb(res) if linear_light else res.astype(_F32)), coc


_SPATIAL_MAX = 11  # OpenCV switches to a slow DFT above 11 x 11 kernels; use torch's FFT there


def _fast_len(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


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
    ph, pw = _fast_len(h + 2 * half), _fast_len(w + 2 * half)
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


# ============================================================================ depth maps


def _smooth_field(h: int, w: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random field (about unit variance) from a cells x cells grid, bicubic upsampled."""
    gh = max(2, int(round(cells * h / max(h, w))) + 1)
    gw = max(2, int(round(cells * w / max(h, w))) + 1)
    g = rng.standard_normal((gh, gw)).astype(_F32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _random_shape(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random occluder mask: a blob, an ellipse or a polygon, covering 5-50 % of the frame."""
    kind = rng.integers(3)
    if kind == 0:
        f = _smooth_field(h, w, rng, int(rng.integers(2, 6)))
        return f > np.quantile(f, rng.uniform(0.5, 0.9))
    canvas = np.zeros((h, w), dtype=np.uint8)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    size = rng.uniform(0.15, 0.45) * min(h, w)
    if kind == 1:
        axes = (max(2, int(size * rng.uniform(0.5, 1.5))), max(2, int(size * rng.uniform(0.5, 1.5))))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = size * rng.uniform(0.5, 1.3, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


def random_inv_depth(
    h: int, w: int, rng: np.random.Generator, kind: str | None = None,
    config: SynthConfig | None = None,
) -> tuple[np.ndarray, str]:
    """A random inverse-depth map in [0,1] (1 = nearest) and its kind.

    ``layers``: a tilted, gently curved background and 1-4 occluders (blobs, ellipses,
    polygons), each nearer than everything before it, with sharp edges; ``plane``: a tilted
    plane; ``constant``: a fronto-parallel plane.
    """
    cfg = config or SynthConfig()
    if kind is None:
        kinds, probs = zip(*cfg.depth_probs)
        p = np.asarray(probs, dtype=np.float64)
        kind = str(kinds[int(rng.choice(len(kinds), p=p / p.sum()))])
    yy, xx = np.mgrid[0:h, 0:w].astype(_F32)
    ys, xs = yy / max(h, w) - 0.5, xx / max(h, w) - 0.5
    if kind == "constant":
        return np.full((h, w), 0.5, dtype=_F32), kind
    if kind == "plane":
        u = rng.uniform(-1, 1) * xs + rng.uniform(-1, 1) * ys
        u = u + 0.05 * _smooth_field(h, w, rng, 3)
    elif kind == "layers":
        u = rng.uniform(-0.3, 0.3) * xs + rng.uniform(-0.3, 0.3) * ys
        u = u + 0.04 * _smooth_field(h, w, rng, int(rng.integers(2, 6)))
        top = float(u.max())
        for _ in range(int(rng.integers(1, 5))):
            m = _random_shape(h, w, rng)
            if not m.any():
                continue
            base = top + rng.uniform(0.05, 0.4)
            tilt = rng.uniform(-0.15, 0.15) * xs + rng.uniform(-0.15, 0.15) * ys
            u = np.where(m, base + tilt, u)
            top = max(top, float((base + tilt)[m].max()))
    else:
        raise UsageError(f"unknown depth kind {kind!r}; kinds: {DEPTH_KINDS}")
    u = u - u.min()
    span = float(u.max())
    return (u / span if span > 1e-6 else u).astype(_F32), kind


def fill_invalid(values: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
    """Replace invalid entries (default: NaN / Inf) by the nearest valid value (float32)."""
    v = np.asarray(values, dtype=_F32)
    bad = ~np.isfinite(v) if invalid is None else (np.asarray(invalid, bool) | ~np.isfinite(v))
    if not bad.any():
        return v.copy()
    if bad.all():
        raise DataError("depth map has no valid pixel")
    _, lab = cv2.distanceTransformWithLabels(bad.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    src = np.flatnonzero(~bad)
    out = v.ravel().copy()
    bi = np.flatnonzero(bad)
    out[bi] = out[src[lab.ravel()[bi] - 1]]
    return out.reshape(v.shape)


def load_inverse_depth(path: str | Path) -> np.ndarray:
    """Read a disparity (``*_disp*``) or depth (``*_depth*``) map from ``.npy`` / ``.npz`` as
    inverse depth (float32 H x W; invalid = non-finite or <= 0, filled with nearest valid)."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arr = z["arr_0"] if "arr_0" in z.files else z[z.files[0]]
        else:
            arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"{p}: cannot read depth map ({e})") from e
    arr = np.squeeze(np.asarray(arr, dtype=_F32))
    if arr.ndim != 2:
        raise DataError(f"{p}: depth map must be 2-D, got shape {arr.shape}")
    invalid = ~np.isfinite(arr) | (arr <= 0)
    if "depth" in p.stem.lower():
        with np.errstate(divide="ignore", invalid="ignore"):
            arr = 1.0 / arr
    return fill_invalid(arr, invalid)


def find_depth_sidecar(photo: str | Path) -> Path | None:
    """A depth map stored beside a photo: ``<stem>_disp.npz|npy``, ``<stem>_depth.npz|npy``, and
    for stereo ``<name>_left.png`` also ``<name>_disp.npz`` (as skimage's motorcycle)."""
    p = Path(photo)
    stems = [p.stem]
    if p.stem.lower().endswith("_left"):
        stems.append(p.stem[:-5])
    for stem in stems:
        for tag in ("_disp", "_depth"):
            for ext in (".npz", ".npy"):
                cand = p.with_name(stem + tag + ext)
                if cand.is_file():
                    return cand
    return None


# ============================================================================ dead leaves


def _textured_disc(
    img: np.ndarray, cx: float, cy: float, r: float, colour: np.ndarray, rng: np.random.Generator,
    xx: np.ndarray, yy: np.ndarray,
) -> None:
    """Blend an anti-aliased disc carrying a grating, fine noise or shading into ``img`` in place."""
    h, w = img.shape[:2]
    x0, x1 = max(int(cx - r) - 2, 0), min(int(cx + r) + 3, w)
    y0, y1 = max(int(cy - r) - 2, 0), min(int(cy + r) + 3, h)
    if x1 <= x0 or y1 <= y0:
        return
    sc = 16
    alpha = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    centre = (int(round((cx - x0) * sc)), int(round((cy - y0) * sc)))
    cv2.circle(alpha, centre, max(1, int(round(r * sc))), 255, -1, cv2.LINE_AA, 4)
    a = alpha.astype(_F32)[..., None] / _F32(255.0)
    ly, lx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    kind = rng.integers(3)
    if kind == 0:  # grating
        th, f = rng.uniform(0, np.pi), rng.uniform(0.03, 0.3)
        pat = np.sin(2 * np.pi * f * (lx * np.cos(th) + ly * np.sin(th)) + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # fine noise
        pat = cv2.GaussianBlur(rng.standard_normal(lx.shape).astype(_F32), (0, 0), rng.uniform(0.5, 2.0))
        pat = pat / max(float(pat.std()), 1e-6) * 0.5
    else:  # shading
        pat = (lx * rng.uniform(-1, 1) + ly * rng.uniform(-1, 1)) / r
    tex = np.clip(colour * (1.0 + rng.uniform(0.1, 0.4) * pat[..., None]), 0, 1)
    patch = img[y0:y1, x0:x1]
    patch += a * (tex - patch)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random sRGB colours (n x 3 float32): uniform hue, mostly low saturation."""
    hsv = np.empty((n, 1, 3), dtype=_F32)
    hsv[:, 0, 0] = rng.uniform(0, 360, n)
    hsv[:, 0, 1] = rng.uniform(0, 1, n) ** 1.5 * 0.9
    hsv[:, 0, 2] = rng.uniform(0.05, 1.0, n) ** 0.8
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0]


def dead_leaves(
    h: int, w: int, rng: np.random.Generator, *, r_min: float = 2.0, r_max: float | None = None,
    exponent: float = 3.0, coverage: float = 3.0, texture_prob: float = 0.3, max_discs: int = 4000,
) -> tuple[np.ndarray, np.ndarray]:
    """Procedural dead-leaves image: H x W x 3 sRGB float32 and its inverse depth (H x W, [0,1]).

    Occluding discs dropped back to front with radii ~ r^-exponent in [r_min, r_max] pixels
    (exponent 3 gives the 1/f^2 spectrum of natural images), random colours, anti-aliased
    edges, and gratings, noise or shading on some large discs. A disc's inverse depth grows
    with its drawing order, so occlusion and depth agree.
    """
    r_max = float(r_max if r_max is not None else 0.4 * max(h, w))
    e1 = 1.0 - exponent
    ea, eb = r_min**e1, r_max**e1
    mean_area = math.pi * (
        (math.log(r_max / r_min) if abs(exponent - 3.0) < 1e-9 else (r_max ** (3 - exponent) - r_min ** (3 - exponent)) / (3 - exponent))
        / ((ea - eb) / (exponent - 1.0))
    )
    n = int(min(max_discs, max(16, coverage * h * w / mean_area)))
    radii = (ea - rng.uniform(0, 1, n) * (ea - eb)) ** (1.0 / e1)
    cx = rng.uniform(-0.05 * w, 1.05 * w, n)
    cy = rng.uniform(-0.05 * h, 1.05 * h, n)
    textured = (rng.uniform(0, 1, n) < texture_prob) & (radii > 6)
    colours = _random_colours(rng, n + 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(_F32)
    c0, c1 = colours[n], colours[n + 1]
    t = (rng.uniform(-1, 1) * xx / w + rng.uniform(-1, 1) * yy / h)[..., None]
    img = np.clip(c0 + (c1 - c0) * (t - t.min()) / max(float(np.ptp(t)), 1e-6), 0, 1).astype(_F32)
    depth = np.zeros((h, w), dtype=_F32)
    shift = 4  # sub-pixel centres and radii (1/16 px)
    sc = 1 << shift
    cxs = np.rint(cx * sc).astype(np.int64).tolist()
    cys = np.rint(cy * sc).astype(np.int64).tolist()
    rads = np.maximum(1, np.rint(radii * sc)).astype(np.int64).tolist()
    cols = colours[:n].tolist()
    levels = ((np.arange(n) + 1.0) / n).tolist()
    for i in range(n):
        centre = (cxs[i], cys[i])
        if textured[i]:
            _textured_disc(img, cx[i], cy[i], float(radii[i]), colours[i], rng, xx, yy)
        else:
            cv2.circle(img, centre, rads[i], cols[i], -1, cv2.LINE_AA, shift)
        cv2.circle(depth, centre, rads[i], levels[i], -1, cv2.LINE_8, shift)
    return np.clip(img, 0.0, 1.0), depth


# ============================================================================ sampling


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_aperture(rng: np.random.Generator, config: SynthConfig) -> Aperture:
    """Draw a lens aperture per ``config.aperture_probs``."""
    kinds, probs = zip(*config.aperture_probs)
    p = np.asarray(probs, dtype=np.float64)
    kind = str(kinds[int(rng.choice(len(kinds), p=p / p.sum()))])
    blades = int(rng.integers(config.blades[0], config.blades[1] + 1))
    rotation = float(rng.uniform(0, 2 * math.pi))
    ring = float(rng.uniform(*config.ring)) if kind in ("disk", "polygon", "mix") else 0.0
    beta = float(rng.uniform(*config.gengauss_beta)) if kind == "gengauss" else 2.0
    mix = float(rng.uniform(0.2, 0.8)) if kind == "mix" else 0.5
    return Aperture(kind, blades, rotation, beta, ring, mix)  # type: ignore[arg-type]


def sample_params(
    inv_depth: np.ndarray, rng: np.random.Generator, config: SynthConfig, depth_kind: str = "given"
) -> SynthParams:
    """Draw lens (focus, CoC scale, aperture), noise and JPEG settings for one sample."""
    u = np.asarray(inv_depth, dtype=_F32)
    aperture = sample_aperture(rng, config)
    in_focus = bool(rng.uniform() < config.in_focus_prob)
    lo, hi = float(u.min()), float(u.max())
    if in_focus:
        lens = Lens(focus=float(np.median(u)), coc_scale=0.0, aperture=aperture)
    else:
        peak = float(rng.uniform(config.min_peak_radius, config.max_radius))
        if rng.uniform() < config.focus_on_content_prob:
            focus = float(u.flat[int(rng.integers(u.size))])
        else:
            span = max(hi - lo, 0.1)
            focus = float(rng.uniform(lo - 0.25 * span, hi + 0.25 * span))
        dev = max(abs(hi - focus), abs(lo - focus))
        if dev < 1e-3 * max(1.0, abs(hi)):  # flat scene focused on itself: move the focus off it
            dev = 0.25 * max(hi - lo, 1.0)
            focus = lo - dev if rng.uniform() < 0.5 else hi + dev
            dev = max(abs(hi - focus), abs(lo - focus))
        lens = Lens(focus=focus, coc_scale=peak / dev, aperture=aperture)
    noisy = rng.uniform() < config.noise_prob
    shot = _log_uniform(rng, *config.shot_noise) if noisy else 0.0
    read = _log_uniform(rng, *config.read_noise) if noisy else 0.0
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)) if rng.uniform() < config.jpeg_prob else 0
    return SynthParams(lens, in_focus, depth_kind, shot, read, quality, int(rng.integers(2**31 - 1)))


def match_mean(blurred: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scale each channel of ``blurred`` so its mean equals ``reference``'s (sRGB, clipped to [0,1])."""
    mb = blurred.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    mr = reference.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    gain = np.where(mb > 1e-6, mr / np.maximum(mb, 1e-6), 1.0).astype(_F32)
    return np.clip(blurred * gain, 0.0, 1.0).astype(_F32)


def add_noise(image: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise in linear light: variance ``shot * x + read^2`` (sRGB in and out)."""
    if shot <= 0 and read <= 0:
        return image
    lin = srgb_to_linear(image)
    std = np.sqrt(np.maximum(_F32(shot) * lin + _F32(read * read), 0.0))
    lin = lin + std * rng.standard_normal(lin.shape, dtype=_F32)
    return linear_to_srgb(lin)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode to 8-bit JPEG at ``quality`` (1-100) with OpenCV and decode again (sRGB [0,1])."""
    u8 = np.rint(np.clip(image, 0, 1) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return (dec[..., ::-1].astype(_F32) / _F32(255.0)).copy()


def apply_params(sharp: np.ndarray, inv_depth: np.ndarray, params: SynthParams, config: SynthConfig) -> SynthSample:
    """Render one sample from drawn ``params`` (deterministic: noise uses ``params.noise_seed``)."""
    img = np.clip(as_rgb(sharp), 0.0, 1.0)
    blurred, coc = render_defocus(
        img, inv_depth, params.lens, max_radius=config.max_radius, min_step=config.layer_min_step,
        rel_step=config.layer_rel_step, linear_light=config.linear_light,
    )
    noise_rng = np.random.default_rng(params.noise_seed)
    blurred = add_noise(blurred, params.shot_noise, params.read_noise, noise_rng)
    if config.match_mean:
        blurred = match_mean(blurred, img)
    if params.jpeg_quality:
        blurred = jpeg_roundtrip(blurred, params.jpeg_quality)
    return SynthSample(np.ascontiguousarray(blurred, dtype=_F32), img, coc, params)


def synthesize(
    sharp: np.ndarray,
    rng: np.random.Generator,
    config: SynthConfig = SynthConfig(),
    inv_depth: np.ndarray | None = None,
) -> SynthSample:
    """One synthetic defocus sample from a sharp sRGB image (H x W x C, [0,1]).

    ``inv_depth`` (H x W, larger = nearer, finite) is used when given, else drawn with
    :func:`random_inv_depth`. All randomness comes from ``rng``.
    """
    img = as_rgb(sharp)
    h, w = img.shape[:2]
    if inv_depth is None:
        u, kind = random_inv_depth(h, w, rng, config=config)
    else:
        u, kind = fill_invalid(inv_depth), "given"
    params = sample_params(u, rng, config, kind)
    return apply_params(img, u, params, config)


# ============================================================================ fixed sets on disk


def _crop(arr: np.ndarray, y: int, x: int, size: tuple[int, int]) -> np.ndarray:
    return arr[y : y + size[0], x : x + size[1]]


def _fit(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Upscale ``arr`` so both sides reach ``size`` (only for sources smaller than the crop)."""
    h, w = arr.shape[:2]
    s = max(size[0] / h, size[1] / w)
    if s <= 1:
        return arr
    dsize = (max(size[1], int(math.ceil(w * s))), max(size[0], int(math.ceil(h * s))))
    out = cv2.resize(arr, dsize, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)
    return out if out.ndim == arr.ndim else out[..., None]


def _encode_png(image: np.ndarray, bits: int) -> bytes:
    if bits == 16:
        q = np.rint(np.clip(image, 0, 1) * 65535.0).astype(np.uint16)
    else:
        q = np.rint(np.clip(image, 0, 1) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(q[..., ::-1]))
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def item_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from integer ``keys`` (e.g. purpose tag, seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


_TAG_SET = 0x5E7


def write_synthetic_set(
    sharp_sources: Sequence[str | Path | np.ndarray],
    out_dir: str | Path,
    n: int,
    size: int | tuple[int, int],
    seed: int,
    config: SynthConfig = SynthConfig(),
    *,
    bits: Literal[8, 16] = 8,
) -> Path:
    """Write a fixed synthetic validation set: ``blur/``, ``sharp/`` (PNG, ``bits`` per channel),
    ``coc/`` (float32 ``.npy``, pixels) and ``synth.json`` (config, seed, per-sample draws).

    Sample i uses a generator seeded from (seed, i) only, so the files are identical for a seed.
    Sources are cropped at native scale (no resampling unless smaller than ``size``); a fraction
    ``config.dead_leaves_fraction`` of samples are dead-leaves images. Photos with a depth
    sidecar (:func:`find_depth_sidecar`) use it. Returns ``out_dir``.
    """
    if bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {bits}")
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if n < 1 or min(hw) < 8:
        raise UsageError("need n >= 1 and size >= 8")
    if not sharp_sources and config.dead_leaves_fraction <= 0:
        raise DataError("no sharp sources given and dead leaves are disabled")
    out = Path(out_dir)
    for sub in ("blur", "sharp", "coc"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for i, src in enumerate(sharp_sources):
        names.append(Path(src).name if isinstance(src, (str, Path)) else f"array{i}")
    cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def load(k: int) -> tuple[np.ndarray, np.ndarray | None]:
        if k not in cache:
            src = sharp_sources[k]
            if isinstance(src, (str, Path)):
                side = find_depth_sidecar(src)
                img = read_native(src)
                dep = load_inverse_depth(side) if side is not None else None
                if dep is not None and dep.shape != img.shape[:2]:
                    dep = None
                cache[k] = (img, dep)
            else:
                cache[k] = (np.asarray(src), None)
        return cache[k]

    records: list[dict[str, Any]] = []
    for i in range(n):
        rng = item_rng(_TAG_SET, seed, i)
        name = f"{i:05d}"
        leaves = not sharp_sources or rng.uniform() < config.dead_leaves_fraction
        rec: dict[str, Any] = {"name": name}
        if leaves:
            img, dl_depth = dead_leaves(hw[0], hw[1], rng)
            own = rng.uniform() < config.dead_leaves_own_depth_prob
            dep = dl_depth if own else None
            rec["source"] = "dead_leaves"
        else:
            k = int(rng.integers(len(sharp_sources)))
            native, full_dep = load(k)
            native = _fit(native, hw)
            if full_dep is not None:
                full_dep = _fit(full_dep, hw, nearest=True)
            y = int(rng.integers(native.shape[0] - hw[0] + 1))
            x = int(rng.integers(native.shape[1] - hw[1] + 1))
            img = to_float(_crop(native, y, x, hw))
            dep = None if full_dep is None else _crop(full_dep, y, x, hw)
            rec.update(source=names[k], crop=[y, x])
        sample = synthesize(img, rng, config, dep)
        (out / "blur" / f"{name}.png").write_bytes(_encode_png(sample.blurred, bits))
        (out / "sharp" / f"{name}.png").write_bytes(_encode_png(sample.sharp, bits))
        np.save(out / "coc" / f"{name}.npy", sample.coc)
        rec["params"] = asdict(sample.params) if sample.params else None
        records.append(rec)
    meta = {
        "format": "gkm-synthetic-set/1",
        "seed": seed,
        "n": n,
        "size": list(hw),
        "bits": bits,
        "config": asdict(config),
        "sources": names,
        "samples": records,
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out


def config_from_dict(d: Mapping[str, Any]) -> SynthConfig:
    """Rebuild a :class:`SynthConfig` from ``asdict`` output (as stored in ``synth.json``)."""
    fields = {k: v for k, v in d.items() if k in SynthConfig.__dataclass_fields__}
    for k, v in list(fields.items()):
        if isinstance(v, list):
            fields[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return SynthConfig(**fields)
