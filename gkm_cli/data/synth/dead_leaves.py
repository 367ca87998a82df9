"""Dead-leaves scenes: textured discs in occlusion order, each with its own depth."""

from __future__ import annotations

import math

import cv2
import numpy as np

_F32 = np.float32


def _textured_disc(
    img: np.ndarray,
    cx: float,
    cy: float,
    r: float,
    colour: np.ndarray,
    rng: np.random.Generator,
    xx: np.ndarray,
    yy: np.ndarray,
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
    h: int,
    w: int,
    rng: np.random.Generator,
    *,
    r_min: float = 2.0,
    r_max: float | None = None,
    exponent: float = 3.0,
    coverage: float = 3.0,
    texture_prob: float = 0.3,
    max_discs: int = 4000,
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
        (
            math.log(r_max / r_min)
            if abs(exponent - 3.0) < 1e-9
            else (r_max ** (3 - exponent) - r_min ** (3 - exponent)) / (3 - exponent)
        )
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
