"""Colour space and the layered, linear-light defocus rendering (steps 2-4 of the model)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from gkm_cli.data.synth.config import Lens
from gkm_cli.data.synth.optics import convolve, psf_kernel, radius_levels
from gkm_cli.errors import DataError

_F32 = np.float32


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve: sRGB [0,1] -> linear light [0,1] (float32)."""
    x = np.clip(np.asarray(x, dtype=_F32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / _F32(12.92), ((x + _F32(0.055)) / _F32(1.055)) ** _F32(2.4)).astype(_F32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer curve: linear light [0,1] -> sRGB [0,1] (float32, clipped)."""
    x = np.clip(np.asarray(x, dtype=_F32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * _F32(12.92), _F32(1.055) * x ** _F32(1.0 / 2.4) - _F32(0.055)).astype(_F32)


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


def layer_ids(
    inv_depth: np.ndarray, lens: Lens, levels: np.ndarray, max_radius: float
) -> tuple[np.ndarray, np.ndarray]:
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
    sid, coc = layer_ids(u, lens, levels, max_radius)
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
    bounds = [*np.searchsorted(flat_ids[order], ids, side="left").tolist(), flat_ids.size]
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
        rgba = np.zeros((*sub_mask.shape, 4), dtype=_F32)
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
