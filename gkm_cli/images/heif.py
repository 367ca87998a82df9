"""HEIF/HEIC (phones) through libheif (the pillow-heif package, used directly: no Pillow plugin
is registered).

Read: the primary image, 8-bit or 10/12-bit (kept as 16-bit samples), with its ICC profile,
EXIF and XMP. libheif applies the file's rotation/mirror boxes, so the EXIF Orientation is set
to 1. The size is checked against the pixel limit from the header, before anything is decoded
(a grid image declares its full size there). Write: HEVC at the given quality, 4:4:4 chroma from
quality 90 up, 10-bit for 16-bit samples, with ICC, EXIF and XMP.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np

from gkm_cli.errors import ImageReadError, ImageWriteError
from gkm_cli.images import plugins
from gkm_cli.images.decoding import check_size, one_line
from gkm_cli.images.image import Buffer, Image, MetadataWarning
from gkm_cli.images.metadata import embed_options
from gkm_cli.images.samples import to_native

_EXIF_PREFIX: Final = b"Exif\x00\x00"
_HEIF_BITS: Final = 10  # what 16-bit samples are written as (HEVC Main 10)


def read_heif(buf: Buffer, name: str, limit: int = 0) -> Image:
    """HEIF/HEIC -> Image (primary image; 10/12-bit data as uint16)."""
    heif = plugins.load("pillow_heif", "HEIF/HEIC", name)
    try:
        file = heif.open_heif(io.BytesIO(bytes(buf)), convert_hdr_to_8bit=False)
        if len(file) > 1:
            note = f"{name}: only the primary of {len(file)} HEIF images is read"
            warnings.warn(note, MetadataWarning, stacklevel=3)
        image = file[file.primary_index]
        width, height = image.size
        check_size(name, "HEIF", int(width), int(height), limit)
        info = dict(image.info)
        heif.set_orientation(info)  # libheif has applied irot/imir: the EXIF must not rotate again
        mode = str(image.mode)
        native = np.asarray(image)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this HEIF") from None
    except Exception as exc:  # libheif: ValueError/EOFError/SyntaxError/RuntimeError on damaged files
        raise ImageReadError(f"{name}: corrupt or unsupported HEIF ({one_line(exc)})") from None
    if native.shape[:2] != (height, width):
        raise ImageReadError(f"{name}: corrupt HEIF (decoded size differs from header)")
    bits = int(info.get("bit_depth") or 8)
    top = np.float32((1 << bits) - 1)
    if native.dtype == np.uint16:  # libheif delivers 10/12-bit values shifted up to 16 bits
        native = native >> (16 - bits)
    elif native.dtype != np.uint8:
        raise ImageReadError(f"{name}: unsupported HEIF sample type {native.dtype}")
    if native.ndim == 2:
        native = native[:, :, None]
    n_colour = 1 if native.shape[2] in (1, 2) else 3
    pixels = np.empty((height, width, n_colour), dtype=np.float32)
    np.divide(native[:, :, :n_colour], top, out=pixels, casting="unsafe")
    alpha = None
    if native.shape[2] in (2, 4):
        alpha = np.empty((height, width), dtype=np.float32)
        np.divide(native[:, :, n_colour], top, out=alpha, casting="unsafe")
    exif = _bytes(info.get("exif"))
    if exif is not None and exif.startswith(_EXIF_PREFIX):
        exif = exif[len(_EXIF_PREFIX) :]
    if exif is not None and exif[:2] not in (b"II", b"MM"):
        warnings.warn(f"{name}: unreadable HEIF EXIF dropped", MetadataWarning, stacklevel=3)
        exif = None
    icc = _bytes(info.get("icc_profile")) if info.get("icc_profile_type") in (None, "prof", "rICC") else None
    return Image(
        pixels=pixels,
        alpha=alpha,
        dtype=np.dtype(np.uint16 if bits > 8 else np.uint8),
        format="heif",
        icc=icc or None,
        exif=exif,
        xmp=_bytes(info.get("xmp")),
        alpha_premultiplied=alpha is not None and "a" in mode,
    )


def _bytes(value: object) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def encode_heif(
    pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, img: Image, icc: bytes | None, quality: int
) -> bytes:
    """HEIC bytes: 8-bit, or 10-bit for 16-bit samples; ICC, EXIF and XMP carried."""
    heif = plugins.load("pillow_heif", "HEIF/HEIC", "HEIF output", writing=True)
    gray = pixels.shape[2] == 1
    mode = ("LA" if alpha is not None else "L") if gray else ("RGBA" if alpha is not None else "RGB")
    if dtype == np.uint16:  # 16-bit -> the file's 10 bits, handed to libheif shifted up (its convention)
        wide: np.ndarray = to_native(pixels, alpha, np.dtype(np.uint16), bgr=False).astype(np.uint32)
        wide = ((wide * ((1 << _HEIF_BITS) - 1) + 32767) // 65535) << (16 - _HEIF_BITS)
        native, mode = wide.astype(np.uint16), mode + ";16"
    else:
        native = to_native(pixels, alpha, np.dtype(np.uint8), bgr=False)
    height, width = native.shape[:2]
    extra: dict[str, object] = {"quality": quality}
    if quality >= 90:
        extra["chroma"] = 444
    extra.update(embed_options(icc, img.exif, img.xmp))
    out = io.BytesIO()
    try:
        file = heif.from_bytes(mode=mode, size=(width, height), data=np.ascontiguousarray(native).tobytes())
        file.save(out, **extra)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ImageWriteError(f"HEIF encoder failed ({one_line(exc)})") from None
    return out.getvalue()
