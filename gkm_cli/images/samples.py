"""Native samples <-> float32 pixels: the only place that scales, clips and rounds."""

from __future__ import annotations

from typing import Final

import numpy as np

from gkm_cli.errors import ImageReadError, UsageError
from gkm_cli.images.formats import BIT_DEPTHS

READ_DTYPES: Final = frozenset(np.dtype(t) for t in ("uint8", "uint16", "float16", "float32", "float64"))
_ROW_BLOCK: Final = 256  # rows quantised per step on write: bounds the float32 temporary.


def to_float(native: np.ndarray, bgr: bool, gray_source: bool, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a decoded H x W [x S] array into float32 pixels (RGB order) and alpha.

    One float32 array of the output size is allocated; the division writes straight into it,
    so no intermediate full-size copy exists.
    """
    if native.dtype not in READ_DTYPES:
        raise ImageReadError(f"{name}: unsupported sample type {native.dtype}")
    scale = np.float32(np.iinfo(native.dtype).max) if native.dtype.kind == "u" else np.float32(1.0)
    if native.ndim == 2:
        native = native[:, :, None]
    h, w, s = native.shape
    if gray_source or s in (1, 2):
        color, alpha_idx = native[:, :, 0:1], (s - 1 if s in (2, 4) else None)
    elif s in (3, 4):
        color, alpha_idx = (native[:, :, 2::-1] if bgr else native[:, :, 0:3]), (3 if s == 4 else None)
    else:
        raise ImageReadError(f"{name}: unsupported channel count {s}")
    if native.dtype == np.float32 and scale == 1 and color.flags.c_contiguous and alpha_idx is None:
        pixels = color  # already the right type and layout: no copy
    else:
        pixels = np.empty((h, w, color.shape[2]), dtype=np.float32)
        np.divide(color, scale, out=pixels, casting="unsafe")
    alpha = None
    if alpha_idx is not None:
        alpha = np.empty((h, w), dtype=np.float32)
        np.divide(native[:, :, alpha_idx], scale, out=alpha, casting="unsafe")
    return pixels, alpha


def output_dtype(src: np.dtype, fmt: str, bit_depth: int | None) -> np.dtype:
    """Sample type written: the source's where the format allows, else the closest one.
    (EXR 16 = half float; HEIF 16 = 16-bit samples written as the file's 10 bits.)"""
    if bit_depth is not None:
        if bit_depth not in BIT_DEPTHS[fmt]:
            allowed = "/".join(str(b) for b in BIT_DEPTHS[fmt])
            raise UsageError(f"{fmt.upper()} cannot store {bit_depth}-bit samples (allowed: {allowed})")
        if fmt == "exr":
            return np.dtype(np.float16 if bit_depth == 16 else np.float32)
        return np.dtype({8: np.uint8, 16: np.uint16, 32: np.float32}[bit_depth])
    if fmt in ("jpeg", "webp", "avif"):
        return np.dtype(np.uint8)
    if fmt == "exr":
        return src if src.kind == "f" else np.dtype(np.float32)
    if fmt == "heif":
        return np.dtype(np.uint8 if src == np.uint8 else np.uint16)
    if src.kind == "f":
        return src if fmt == "tiff" else np.dtype(np.uint16)
    return src


def to_native(pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, bgr: bool) -> np.ndarray:
    """float32 pixels (+ alpha) -> H x W [x S] array of ``dtype`` for an encoder.

    Integers are scaled, clipped to [0, 1] and rounded to nearest in blocks of rows, so the
    only temporary is one float32 block; floats are copied unclipped. Peak memory: pixels +
    result + one block.
    """
    h, w, c = pixels.shape
    s = c + (alpha is not None)
    if dtype.kind == "f" and s == c and dtype == pixels.dtype:
        return pixels[:, :, 0] if c == 1 else pixels
    out = np.empty((h, w, s), dtype=dtype)
    planes = pixels[:, :, ::-1] if (bgr and c == 3) else pixels
    if dtype.kind == "f":
        out[:, :, :c] = planes
        if alpha is not None:
            out[:, :, c] = alpha
    else:
        top = np.float32(np.iinfo(dtype).max)
        for r0 in range(0, h, _ROW_BLOCK):
            r1 = min(h, r0 + _ROW_BLOCK)
            out[r0:r1, :, :c] = _quantise(planes[r0:r1], top)
            if alpha is not None:
                out[r0:r1, :, c] = _quantise(alpha[r0:r1], top)
    return out[:, :, 0] if s == 1 else out


def _quantise(block: np.ndarray, top: np.float32) -> np.ndarray:
    """round(clip(block, 0, 1) * top) as float32 (NaN -> 0)."""
    tmp = np.multiply(block, top, dtype=np.float32)
    np.nan_to_num(tmp, copy=False, nan=0.0)
    np.clip(tmp, 0, top, out=tmp)
    return np.rint(tmp, out=tmp)


def unpremultiply(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour divided by alpha (where alpha > 0), for formats with straight alpha only."""
    out = pixels.copy()
    a = alpha[:, :, None]
    np.divide(pixels, a, out=out, where=a > 0)
    return np.clip(out, 0, 1, out=out)
