"""WebP and AVIF through Pillow (8-bit; AVIF where Pillow was built with libavif).

Read: RGB(A) or gray, with the ICC profile, EXIF and XMP; the size is checked against the pixel
limit from the header (Pillow opens lazily), and a WebP's RIFF size must fit the file. Stored
orientation is kept as for JPEG (EXIF carried, pixels not rotated). Write: a lossless WebP stays
lossless, otherwise the quality given (``--jpeg-quality``) is used; ICC, EXIF and XMP carried.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Final

import numpy as np

from gkm_cli.errors import ImageReadError, ImageWriteError
from gkm_cli.images import plugins
from gkm_cli.images.decoding import check_size, one_line
from gkm_cli.images.image import Buffer, Carry, Image, MetadataWarning
from gkm_cli.images.metadata import embed_options
from gkm_cli.images.samples import to_float, to_native

_EXIF_PREFIX: Final = b"Exif\x00\x00"
_KIND: Final = {"webp": "WebP", "avif": "AVIF"}


def _pillow(fmt: str, name: str, *, writing: bool = False) -> object:
    """PIL.Image, checked to handle ``fmt`` (AVIF needs a Pillow built with libavif)."""
    module = plugins.load("PIL.Image", _KIND[fmt], name, writing=writing)
    features = plugins.load("PIL.features", _KIND[fmt], name, writing=writing)
    if not features.check(fmt):
        verb = "writing" if writing else "reading"
        text = f"{name}: {verb} {_KIND[fmt]} needs a Pillow built with {fmt} support ({plugins.INSTALL_HINT})"
        raise (ImageWriteError(text) if writing else ImageReadError(text))
    return module


def read_pillow(buf: Buffer, name: str, fmt: str, limit: int = 0) -> Image:
    """WebP / AVIF -> Image (8-bit)."""
    pil = _pillow(fmt, name)
    kind = _KIND[fmt]
    lossless = False
    if fmt == "webp":
        lossless = _webp_lossless(buf, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: our own limit applies
            im = pil.open(io.BytesIO(bytes(buf)), formats=[fmt.upper()])  # type: ignore[attr-defined]
            width, height = im.size
            check_size(name, kind, int(width), int(height), limit)
            if im.mode not in ("RGB", "RGBA", "L", "LA"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            im.load()
            info = dict(im.info)
            native = np.asarray(im)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this {kind}") from None
    except Exception as exc:  # Pillow: OSError / SyntaxError / ValueError / DecompressionBombError
        raise ImageReadError(f"{name}: corrupt or unsupported {kind} ({one_line(exc)})") from None
    if native.shape[:2] != (height, width) or native.dtype != np.uint8:
        raise ImageReadError(f"{name}: corrupt {kind} (decoded size differs from header)")
    pixels, alpha = to_float(native, bgr=False, gray_source=native.ndim == 2 or native.shape[2] == 2, name=name)
    exif = _as_bytes(info.get("exif"))
    if exif is not None and exif.startswith(_EXIF_PREFIX):
        exif = exif[len(_EXIF_PREFIX) :]
    if exif is not None and exif[:2] not in (b"II", b"MM"):
        warnings.warn(f"{name}: unreadable {kind} EXIF dropped", MetadataWarning, stacklevel=3)
        exif = None
    return Image(
        pixels=pixels,
        alpha=alpha,
        dtype=np.dtype(np.uint8),
        format=fmt,
        icc=_as_bytes(info.get("icc_profile")),
        exif=exif,
        xmp=_as_bytes(info.get("xmp")),
        carry=Carry(lossless=lossless),
    )


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8") or None
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _webp_lossless(buf: Buffer, name: str) -> bool:
    """Whether a WebP holds a lossless (VP8L) bitstream; its RIFF size must fit the file."""
    (riff_size,) = struct.unpack("<I", buf[4:8])
    if riff_size + 8 > len(buf):
        raise ImageReadError(f"{name}: truncated WebP (file shorter than its RIFF header says)")
    pos = 12
    while pos + 8 <= len(buf):
        kind = bytes(buf[pos : pos + 4])
        (size,) = struct.unpack("<I", buf[pos + 4 : pos + 8])
        if kind == b"VP8L":
            return True
        if kind == b"VP8 ":
            return False
        pos += 8 + size + (size & 1)
    return False


def encode_pillow(
    pixels: np.ndarray, alpha: np.ndarray | None, img: Image, fmt: str, icc: bytes | None, quality: int
) -> bytes:
    """WebP / AVIF bytes (8-bit) with ICC, EXIF and XMP; lossless WebP when the input was."""
    pil = _pillow(fmt, f"{_KIND[fmt]} output", writing=True)
    native = to_native(pixels, alpha, np.dtype(np.uint8), bgr=False)
    options: dict[str, object] = {"quality": quality}
    if fmt == "webp" and img.format == "webp" and img.carry.lossless:
        options = {"lossless": True, "quality": 100, "method": 4, "exact": True}
    options.update(embed_options(icc, img.exif, img.xmp))
    out = io.BytesIO()
    try:
        pil.fromarray(native).save(out, fmt.upper(), **options)  # type: ignore[attr-defined]
    except (ValueError, OSError) as exc:
        raise ImageWriteError(f"{_KIND[fmt]} encoder failed ({one_line(exc)})") from None
    return out.getvalue()
