"""PNG: chunk validation and metadata on read; the one PNG encoder on write (images, blur
maps, previews and synthetic data all go through :func:`encode_png_array`)."""

from __future__ import annotations

import struct
import warnings
import zlib
from typing import Final

import cv2
import numpy as np

from gkm_cli.errors import ImageReadError, ImageWriteError
from gkm_cli.images.decoding import check_size, imdecode
from gkm_cli.images.image import Buffer, Carry, Image, MetadataWarning, PngChunk
from gkm_cli.images.samples import to_float, to_native

PNG_SIG: Final = b"\x89PNG\r\n\x1a\n"
_XMP_KEYWORD: Final = b"XML:com.adobe.xmp"
# Chunks whose meaning survives deblurring although PNG marks them unsafe-to-copy.
_PNG_COLOUR_CHUNKS: Final = frozenset({b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCV", b"cLLI"})
_PNG_OWN_CHUNKS: Final = frozenset({b"iCCP", b"eXIf"})
_PNG_LEVEL: Final = 4  # zlib level for PNG output: close to level 9 on photos, several times faster.


def _png_chunks(buf: Buffer, name: str) -> tuple[tuple[int, int, int, int, int], list[tuple[bytes, bytes]]]:
    """Validate the chunk structure (CRCs, IEND) and return IHDR fields and ancillary chunks."""
    n = len(buf)
    pos = 8
    ihdr: tuple[int, int, int, int, int] | None = None
    ancillary: list[tuple[bytes, bytes]] = []
    with memoryview(buf) as mv:
        while True:
            if pos + 8 > n:
                raise ImageReadError(f"{name}: truncated PNG (no IEND chunk)")
            length, kind = struct.unpack(">I4s", mv[pos : pos + 8])
            end = pos + 12 + length
            if end > n:
                raise ImageReadError(f"{name}: truncated PNG ({kind.decode('latin-1')} chunk cut off)")
            (crc,) = struct.unpack(">I", mv[end - 4 : end])
            if zlib.crc32(mv[pos + 4 : end - 4]) != crc:
                raise ImageReadError(f"{name}: corrupt PNG (bad CRC in {kind.decode('latin-1')} chunk)")
            if ihdr is None:
                if kind != b"IHDR" or length != 13:
                    raise ImageReadError(f"{name}: corrupt PNG (first chunk is not IHDR)")
                ihdr = struct.unpack(">IIBBxxB", mv[pos + 8 : pos + 21])
            elif kind == b"IEND":
                break
            elif kind[0] & 0x20:  # ancillary
                ancillary.append((kind, bytes(mv[pos + 8 : end - 4])))
            pos = end
    return ihdr, ancillary


def read_png(buf: Buffer, name: str, limit: int = 0) -> Image:
    """PNG -> Image, keeping 16-bit samples and gray/alpha layout."""
    (width, height, depth, ctype, _interlace), ancillary = _png_chunks(buf, name)
    check_size(name, "PNG", width, height, limit)
    icc = exif = xmp = None
    extras: list[PngChunk] = []
    for kind, data in ancillary:
        if kind == b"iCCP" and icc is None:
            icc = _png_read_iccp(data, name)
        elif kind == b"eXIf" and exif is None:
            exif = data[6:] if data.startswith(b"Exif\x00") else data
        elif kind == b"iTXt" and data.startswith(_XMP_KEYWORD + b"\x00") and xmp is None:
            xmp = _png_read_itxt_text(data, name)
        elif kind in _PNG_COLOUR_CHUNKS or (kind[3] & 0x20 and kind not in _PNG_OWN_CHUNKS):
            extras.append(PngChunk(kind, data))
    native = imdecode(buf, name, "PNG", width * height)
    if native.shape[:2] != (height, width):
        raise ImageReadError(f"{name}: corrupt PNG (decoded size differs from header)")
    pixels, alpha = to_float(native, bgr=True, gray_source=ctype in (0, 4), name=name)
    del native
    return Image(
        pixels=pixels,
        alpha=alpha,
        dtype=np.dtype(np.uint16 if depth == 16 else np.uint8),
        format="png",
        icc=icc,
        exif=exif,
        xmp=xmp,
        carry=Carry(png_chunks=tuple(extras)),
    )


def _png_read_iccp(data: bytes, name: str) -> bytes | None:
    """Profile bytes from an iCCP chunk (name, NUL, method 0, zlib stream)."""
    sep = data.find(b"\x00")
    try:
        return zlib.decompress(data[sep + 2 :]) if 0 < sep < 80 else None
    except zlib.error:
        warnings.warn(f"{name}: corrupt ICC profile chunk ignored", MetadataWarning, stacklevel=4)
        return None


def _png_read_itxt_text(data: bytes, name: str) -> bytes | None:
    """UTF-8 text of an iTXt chunk (keyword, flags, language, translated keyword, text)."""
    parts = data.split(b"\x00", 1)[1]
    compressed = parts[:1] == b"\x01"
    rest = parts[2:].split(b"\x00", 2)
    if len(rest) < 3:
        return None
    try:
        return zlib.decompress(rest[2]) if compressed else rest[2]
    except zlib.error:
        warnings.warn(f"{name}: corrupt XMP chunk ignored", MetadataWarning, stacklevel=4)
        return None


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One serialised PNG chunk with length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(
    pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, img: Image, extras: tuple[PngChunk, ...]
) -> bytes:
    """PNG via OpenCV (gray+alpha via a small own encoder), then metadata chunks after IHDR."""
    native = to_native(pixels, alpha, dtype, bgr=True)
    png = encode_png_array(native, level=_PNG_LEVEL)
    del native
    meta: list[bytes] = []
    if img.icc is not None:
        meta.append(png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(img.icc, 9)))
    if img.exif is not None:
        meta.append(png_chunk(b"eXIf", img.exif))
    if img.xmp is not None:
        meta.append(png_chunk(b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + img.xmp))
    meta += [png_chunk(c.kind, c.data) for c in extras]
    head = 8 + 25  # signature + IHDR chunk
    return png[:head] + b"".join(meta) + png[head:]


def encode_png_array(native: np.ndarray, *, level: int | None = None) -> bytes:
    """PNG bytes of H x W [x C] uint8/uint16 samples in OpenCV's channel order (gray, gray+alpha,
    BGR, BGRA). ``level``: zlib level; None = OpenCV's default (blur maps, previews, synthetic
    data: kept so their files stay byte for byte what they were)."""
    if native.ndim == 3 and native.shape[2] == 2:
        return _encode_png_gray_alpha(native)
    ok, enc = cv2.imencode(".png", native, [] if level is None else [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ImageWriteError("PNG encoder failed")
    return enc.tobytes()


def _encode_png_gray_alpha(native: np.ndarray) -> bytes:
    """Gray+alpha PNG (colour type 4), which OpenCV cannot write; rows use the Sub filter."""
    h, w, _ = native.shape
    depth = native.dtype.itemsize * 8
    rows = native.astype(">u2" if depth == 16 else np.uint8, copy=False).view(np.uint8).reshape(h, -1)
    bpp = 2 * native.dtype.itemsize
    raw = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 1
    raw[:, 1 : 1 + bpp] = rows[:, :bpp]
    np.subtract(rows[:, bpp:], rows[:, :-bpp], out=raw[:, 1 + bpp :])
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0)
    idat = zlib.compress(raw.tobytes(), 6)
    return PNG_SIG + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
