"""JPEG: marker walk (frame size, EXIF/XMP/ICC, carried APPn/COM) on read; OpenCV's encoder
plus the metadata segments on write."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from typing import Final

import cv2
import numpy as np

from gkm_cli.errors import ImageReadError, ImageWriteError
from gkm_cli.images.decoding import check_size, imdecode
from gkm_cli.images.image import Buffer, Carry, Image, JpegSegment, MetadataWarning
from gkm_cli.images.samples import to_float, to_native

_EXIF_PREFIX: Final = b"Exif\x00\x00"
_XMP_PREFIX: Final = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_PREFIX: Final = b"ICC_PROFILE\x00"
_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def read_jpeg(buf: Buffer, name: str, limit: int = 0) -> Image:
    """JPEG -> Image; truncation is caught by requiring an EOI marker after the first scan."""
    n = len(buf)
    pos = 2
    components = 0
    size: tuple[int, int] | None = None  # (width, height) from the frame header
    exif = xmp = None
    icc_parts: dict[int, bytes] = {}
    extras: list[JpegSegment] = []
    while True:
        if pos >= n:
            raise ImageReadError(f"{name}: truncated JPEG (ends before image data)")
        if buf[pos] != 0xFF:
            raise ImageReadError(f"{name}: corrupt JPEG (no marker at byte {pos})")
        while pos < n and buf[pos] == 0xFF:
            pos += 1
        if pos + 3 > n:
            raise ImageReadError(f"{name}: truncated JPEG (ends before image data)")
        marker = buf[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD8, 0xD9):
            raise ImageReadError(f"{name}: corrupt JPEG (no image data)")
        (length,) = struct.unpack(">H", buf[pos : pos + 2])
        if length < 2:
            raise ImageReadError(f"{name}: corrupt JPEG (bad segment length)")
        if pos + length > n:
            raise ImageReadError(f"{name}: truncated JPEG (segment cut off)")
        payload = bytes(buf[pos + 2 : pos + length])
        pos += length
        if marker == 0xDA:
            break
        if marker in _SOF_MARKERS and len(payload) >= 6:
            components = payload[5]
            size = struct.unpack(">H", payload[3:5])[0], struct.unpack(">H", payload[1:3])[0]
        elif marker == 0xE1 and payload.startswith(_EXIF_PREFIX):
            exif = exif or payload[len(_EXIF_PREFIX) :]
        elif marker == 0xE1 and payload.startswith(_XMP_PREFIX):
            xmp = xmp or payload[len(_XMP_PREFIX) :]
        elif marker == 0xE2 and payload.startswith(_ICC_PREFIX) and len(payload) > 14:
            icc_parts.setdefault(payload[12], payload)
        elif (0xE0 <= marker <= 0xEF and marker not in (0xE2, 0xEE)) or marker == 0xFE:
            extras.append(JpegSegment(marker, payload))  # APP14 (Adobe transform) never carried
        elif marker == 0xE2 and not payload.startswith(b"MPF\x00"):  # MPF points at dropped images
            extras.append(JpegSegment(marker, payload))
    if size is None:
        raise ImageReadError(f"{name}: corrupt JPEG (no frame header before the image data)")
    check_size(name, "JPEG", *size, limit)
    if components == 4:
        raise ImageReadError(f"{name}: CMYK JPEG is not supported")
    if buf.find(b"\xff\xd9", pos) < 0:
        raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker)")
    native = imdecode(buf, name, "JPEG", size[0] * size[1])
    if native.shape[:2] != (size[1], size[0]):
        raise ImageReadError(f"{name}: corrupt JPEG (decoded size differs from header)")
    pixels, alpha = to_float(native, bgr=True, gray_source=components == 1, name=name)
    dtype = native.dtype
    del native
    return Image(
        pixels=pixels,
        alpha=alpha,
        dtype=dtype,
        format="jpeg",
        icc=_join_icc(icc_parts, name),
        exif=exif,
        xmp=xmp,
        carry=Carry(jpeg_segments=tuple(extras)),
    )


def _join_icc(parts: Mapping[int, bytes], name: str) -> bytes | None:
    """Reassemble a profile split over APP2 segments (sequence numbers 1..N)."""
    if not parts:
        return None
    total = next(iter(parts.values()))[13]
    if sorted(parts) != list(range(1, total + 1)):
        warnings.warn(f"{name}: incomplete ICC profile ignored", MetadataWarning, stacklevel=4)
        return None
    return b"".join(parts[i][14:] for i in range(1, total + 1))


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One serialised JPEG marker segment."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def encode_jpeg(
    pixels: np.ndarray, dtype: np.dtype, img: Image, extras: tuple[JpegSegment, ...], quality: int
) -> bytes:
    """JPEG via OpenCV (4:4:4 chroma from quality 90 up), then APP1/APP2 metadata after SOI."""
    native = to_native(pixels, None, dtype, bgr=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if quality >= 90:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, enc = cv2.imencode(".jpg", native, params)
    del native
    if not ok:
        raise ImageWriteError("JPEG encoder failed")
    jpg = enc.tobytes()
    rest = 2
    own_app0 = b""
    if jpg[2:4] == b"\xff\xe0":  # OpenCV's JFIF segment
        end = 4 + struct.unpack(">H", jpg[4:6])[0]
        own_app0, rest = jpg[2:end], end
    app0 = [s for s in extras if s.marker == 0xE0]
    segs: list[bytes] = [_jpeg_segment(s.marker, s.data) for s in app0]
    if not app0 and img.exif is None:
        segs.append(own_app0)
    if img.exif is not None:
        if len(img.exif) + len(_EXIF_PREFIX) <= 65533:
            segs.append(_jpeg_segment(0xE1, _EXIF_PREFIX + img.exif))
        else:
            warnings.warn("EXIF larger than 64 KB dropped from JPEG output", MetadataWarning, stacklevel=3)
    if img.xmp is not None:
        if len(img.xmp) + len(_XMP_PREFIX) <= 65533:
            segs.append(_jpeg_segment(0xE1, _XMP_PREFIX + img.xmp))
        else:
            warnings.warn("XMP larger than 64 KB dropped from JPEG output", MetadataWarning, stacklevel=3)
    if img.icc is not None:
        segs += _icc_segments(img.icc)
    segs += [_jpeg_segment(s.marker, s.data) for s in extras if s.marker != 0xE0]
    return jpg[:2] + b"".join(segs) + jpg[rest:]


def _icc_segments(icc: bytes) -> list[bytes]:
    """APP2 ICC_PROFILE segments, numbered 1..N, each at most 65519 profile bytes."""
    step = 65533 - len(_ICC_PREFIX) - 2
    parts = [icc[i : i + step] for i in range(0, len(icc), step)] or [b""]
    if len(parts) > 255:
        warnings.warn("ICC profile too large for JPEG (> 16 MB) dropped", MetadataWarning, stacklevel=4)
        return []
    return [_jpeg_segment(0xE2, _ICC_PREFIX + bytes((i + 1, len(parts))) + p) for i, p in enumerate(parts)]
