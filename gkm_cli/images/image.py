"""The decoded image: float32 pixels plus everything needed to write them back, and the
format-specific extras (PNG chunks, JPEG segments, TIFF tags) carried to the same format."""

from __future__ import annotations

import dataclasses
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gkm_cli.images.formats import FORMATS

PathLike = str | os.PathLike[str]
Buffer = bytes | mmap.mmap


class MetadataWarning(UserWarning):
    """Some metadata or an alpha channel could not be carried; the image itself is fine."""


@dataclass(frozen=True)
class PngChunk:
    """A PNG ancillary chunk re-emitted verbatim when PNG is written again."""

    kind: bytes
    data: bytes


@dataclass(frozen=True)
class JpegSegment:
    """A JPEG marker segment (APPn / COM payload after the length) re-emitted for JPEG output."""

    marker: int
    data: bytes


@dataclass(frozen=True)
class TiffTag:
    """A raw TIFF field: type code, value count and value bytes in the owner's byte order."""

    code: int
    dtype: int
    count: int
    data: bytes


@dataclass(frozen=True)
class Carry:
    """Format-specific extras, written back only when the output format equals the input's."""

    png_chunks: tuple[PngChunk, ...] = ()
    jpeg_segments: tuple[JpegSegment, ...] = ()
    tiff_tags: tuple[TiffTag, ...] = ()
    tiff_byteorder: str = "<"
    tiff_compression: str | None = None  # "zlib" or None (uncompressed)
    lossless: bool = False  # WebP: the input was lossless (VP8L), so is the output
    exr_header: tuple[tuple[str, object], ...] = ()  # EXR: descriptive header attributes


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image: float32 pixels in [0, 1] plus everything needed to write it back.

    ``pixels`` is H x W x C (C = 1 gray or 3 RGB, RGB order); ``alpha`` is H x W float32 in
    [0, 1] or None and is never deblurred; ``dtype`` is the sample type of the source file;
    ``exif`` is a TIFF-structured EXIF blob (starts with ``II*`` or ``MM*``).
    Float TIFF input keeps its values unclipped (they may exceed 1). ``linear``: for a file
    that stores linear light (EXR, ``--raw-linear`` RAW), its samples as float32 H x W x C;
    ``pixels`` then holds them sRGB-encoded, as the network expects (images/colour.py).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    dtype: np.dtype
    format: str
    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    path: Path | None = None
    alpha_premultiplied: bool = False
    carry: Carry = field(default_factory=Carry)
    linear: np.ndarray | None = None

    def __post_init__(self) -> None:
        px = self.pixels
        if not isinstance(px, np.ndarray) or px.dtype != np.float32 or px.ndim != 3 or px.shape[2] not in (1, 3):
            raise ValueError("Image.pixels must be a float32 H x W x C array with C in (1, 3)")
        if self.alpha is not None and (self.alpha.dtype != np.float32 or self.alpha.shape != px.shape[:2]):
            raise ValueError("Image.alpha must be a float32 H x W array matching the pixels")
        if self.format not in FORMATS:
            raise ValueError(f"Image.format must be one of {FORMATS}, got {self.format!r}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def height(self) -> int:
        """Rows, in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns, in pixels."""
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels without alpha: 1 (gray) or 3 (RGB)."""
        return int(self.pixels.shape[2])


def with_pixels(img: Image, pixels: np.ndarray) -> Image:
    """Return ``img`` with new float32 pixels (H x W or H x W x C, same size), metadata kept."""
    new = np.asarray(pixels, dtype=np.float32)
    if new.ndim == 2:
        new = new[:, :, None]
    if new.ndim != 3 or new.shape[:2] != img.pixels.shape[:2]:
        raise ValueError(f"new pixels {new.shape} do not match the image size {img.pixels.shape[:2]}")
    return dataclasses.replace(img, pixels=new)
