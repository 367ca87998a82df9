"""Inverse-depth maps: random layered scenes, planes, constants; real disparity maps and their sidecars."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gkm_cli.data.synth.config import DEPTH_KINDS, SynthConfig
from gkm_cli.errors import DataError, UsageError

_F32 = np.float32


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
    h: int,
    w: int,
    rng: np.random.Generator,
    kind: str | None = None,
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
