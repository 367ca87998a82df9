"""Encoding defocus maps (``gkm blurmap``): 16-bit PNG/TIFF with a scale, float32 .npy, heatmaps.

A map holds, per pixel, the expected Gaussian blur sigma in input pixels
(``DeblurOutput.sigma_map()``). Integer files store ``value = round(sigma_px * scale)`` with
``scale = 65535 / max_sigma`` (default ``max_sigma`` = 16 px, so one step is 1/4096 px and
sigmas above 16 px are clipped); the scale is written in a sidecar JSON beside the map. The
``.npy`` output is the float32 map itself (scale 1). Heatmaps are colour PNGs for people
(OpenCV's inferno colour map over 0..max_sigma), not for measurement.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from gkm_cli.errors import SettingError, setting_ref
from gkm_cli.images import encode_png_array

DEFAULT_MAX_SIGMA = 16.0
MAP_FORMATS = ("png", "tiff", "npy")
U16_MAX = 65535


@dataclass(frozen=True)
class MapSettings:
    """How a sigma map is written: ``format`` png | tiff | npy, ``heatmap`` (colour PNG instead)
    and ``max_sigma`` (px mapped to the top integer value / colour)."""

    format: str = "png"
    heatmap: bool = False
    max_sigma: float = DEFAULT_MAX_SIGMA

    def __post_init__(self) -> None:
        if self.format not in MAP_FORMATS:
            choices = ", ".join(MAP_FORMATS)
            wrong = f"blurmap {setting_ref('format')} must be one of {choices}, got {self.format!r}"
            raise SettingError("format", wrong, leading=False)
        if self.heatmap and self.format != "png":
            fmt = setting_ref("format")
            raise SettingError("heatmap", f"writes a colour PNG; it cannot be combined with {fmt} tiff/npy")
        if not self.max_sigma > 0:
            raise SettingError("max_sigma", f"must be > 0 px, got {self.max_sigma}")

    @property
    def scale(self) -> float:
        """Stored value per pixel of sigma (``value = sigma_px * scale``)."""
        return 1.0 if self.format == "npy" and not self.heatmap else U16_MAX / self.max_sigma

    @property
    def file_format(self) -> str:
        return "png" if self.heatmap else self.format


def quantise_sigma(sigma: np.ndarray, max_sigma: float, top: int) -> np.ndarray:
    """round(clip(sigma / max_sigma, 0, 1) * top) as uint16 (NaN -> 0)."""
    v = np.nan_to_num(sigma.astype(np.float32), nan=0.0) * np.float32(top / max_sigma)
    quantised: np.ndarray = np.rint(np.clip(v, 0, top)).astype(np.uint16)
    return quantised


def heatmap_rgb(sigma: np.ndarray, max_sigma: float) -> np.ndarray:
    """H x W x 3 uint8 BGR colour rendering (inferno) of sigma over 0..max_sigma px."""
    index = quantise_sigma(sigma, max_sigma, 255).astype(np.uint8)
    return cv2.applyColorMap(index, cv2.COLORMAP_INFERNO)


def encode_sigma_map(sigma: np.ndarray, settings: MapSettings) -> bytes:
    """File bytes of an H x W float32 sigma map (px) in the chosen format."""
    if settings.heatmap:
        return encode_png_array(heatmap_rgb(sigma, settings.max_sigma))
    if settings.format == "npy":
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(sigma, dtype=np.float32), allow_pickle=False)
        return out.getvalue()
    if settings.format == "tiff":
        out = io.BytesIO()
        quantised = quantise_sigma(sigma, settings.max_sigma, U16_MAX)
        tifffile.imwrite(out, quantised, photometric="minisblack", compression="zlib")
        return out.getvalue()
    return encode_png_array(quantise_sigma(sigma, settings.max_sigma, U16_MAX))


def sidecar_path(output: Path) -> Path:
    """``map.png`` -> ``map.json`` (the scale and provenance of the map)."""
    return output.with_suffix(".json")


def sidecar_record(sigma: np.ndarray, settings: MapSettings, **provenance: object) -> dict[str, object]:
    """What a reader needs to turn stored values back into sigma, plus summary statistics."""
    finite = sigma[np.isfinite(sigma)]
    encoding: dict[str, object]
    if settings.heatmap:
        encoding = {
            "encoding": "heatmap (OpenCV COLORMAP_INFERNO, 8-bit)",
            "decode": "colour index i in 0..255 means sigma_px = i / 255 * max_sigma_px (for viewing only)",
        }
    elif settings.format == "npy":
        encoding = {"encoding": "float32 .npy", "scale": 1.0, "decode": "sigma_px = value"}
    else:
        encoding = {
            "encoding": f"uint16 {settings.format.upper()}",
            "scale": settings.scale,
            "decode": "sigma_px = value / scale",
        }
    return {
        "kind": "gkm blurmap",
        "quantity": "expected Gaussian defocus blur sigma per pixel",
        "unit": "input pixels",
        **encoding,
        "max_sigma_px": settings.max_sigma,
        "height": int(sigma.shape[0]),
        "width": int(sigma.shape[1]),
        "sigma_min": float(finite.min()) if finite.size else None,
        "sigma_mean": float(finite.mean()) if finite.size else None,
        "sigma_max": float(finite.max()) if finite.size else None,
        "clipped_fraction": float(np.mean(finite > settings.max_sigma)) if finite.size else 0.0,
        **provenance,
    }
