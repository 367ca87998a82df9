"""The camera after the lens (step 5): mean matching, Poisson-Gaussian noise, a JPEG round trip."""

from __future__ import annotations

import cv2
import numpy as np

from gkm_cli.data.synth.render import linear_to_srgb, srgb_to_linear
from gkm_cli.errors import DataError

_F32 = np.float32


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
    if dec is None:
        raise DataError("JPEG decoding failed")
    return (dec[..., ::-1].astype(_F32) / _F32(255.0)).copy()
