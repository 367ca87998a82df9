"""Camera RAW (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, ...) through LibRaw (the rawpy package).

Read only: demosaiced by LibRaw at the camera's white balance, into 16-bit RGB with the sRGB
primaries and the sRGB tone curve (``linear=True``: linear light, see images/colour.py), with
the exposure as shot (no auto-brightening) and the camera's orientation applied. The EXIF comes
from the file's TIFF structure (DNG, NEF, CR2, ARW, ORF, RW2, PEF...) or else from its embedded
JPEG preview (CR3, RAF); its Orientation is set to 1, as the pixels are already upright. XMP is
not carried: a DNG's XMP holds raw-development settings that must not be applied again to the
developed image. The output is a TIFF with an sRGB (or linear sRGB) ICC profile.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Final

import numpy as np

from gkm_cli.errors import ImageReadError
from gkm_cli.images import plugins
from gkm_cli.images.colour import LINEAR_SRGB_ICC, SRGB_ICC, srgb_encode
from gkm_cli.images.decoding import captured_stderr, check_size, one_line
from gkm_cli.images.image import Buffer, Image, MetadataWarning, TiffTag
from gkm_cli.images.metadata import EXIF_IFD0_TAGS, BadTiff, Ifd, exif_blob, ifd_entries, load_ifd, parse_exif

_DNG_VERSION: Final = 50706
_ORIENTATION: Final = 274


def is_tiff_raw(buf: Buffer) -> bool:
    """True for a TIFF-structured file that is a camera RAW whatever its name: a DNG (IFD0 has
    DNGVersion) or a Canon CR2 ("CR" after the header)."""
    if bytes(buf[8:10]) == b"CR":
        return True
    bo = {b"II": "<", b"MM": ">"}.get(bytes(buf[:2]))
    if bo is None or len(buf) < 16:
        return False
    try:
        (first,) = struct.unpack(bo + "I", buf[4:8])
        return any(code == _DNG_VERSION for code, *_ in ifd_entries(buf, first, bo))
    except (BadTiff, struct.error):
        return False


def read_raw(buf: Buffer, name: str, limit: int = 0, *, linear: bool = False) -> Image:
    """A camera RAW file -> Image (format "raw", 16-bit samples); see the module docstring."""
    rawpy = plugins.load("rawpy", "camera RAW", name)
    data = bytes(buf)
    with captured_stderr() as lines:
        try:
            with rawpy.imread(io.BytesIO(data)) as raw:
                sizes = raw.sizes
                check_size(name, "RAW", int(sizes.width), int(sizes.height), limit)
                rgb = raw.postprocess(
                    use_camera_wb=True,
                    output_bps=16,
                    no_auto_bright=True,
                    gamma=(1.0, 1.0) if linear else (2.4, 12.92),
                    output_color=rawpy.ColorSpace.sRGB,
                )
                thumb_exif = None if _tiff_order(data) else _thumbnail_exif(raw)
        except ImageReadError:
            raise
        except MemoryError:
            raise ImageReadError(f"{name}: not enough memory to decode this RAW file") from None
        except Exception as exc:  # rawpy raises LibRaw*Error (and IOError) on damaged or unknown files
            reason = _reason(exc, lines)
            raise ImageReadError(f"{name}: corrupt or unsupported camera RAW ({reason})") from None
    if lines:  # LibRaw prints data errors ("Unexpected end of file") and goes on with zeros
        reason = lines[0].decode("utf-8", "replace").split(":", 1)[-1].strip()[:120]
        raise ImageReadError(f"{name}: corrupt camera RAW ({reason})")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint16:
        raise ImageReadError(f"{name}: unsupported camera RAW layout {rgb.shape} {rgb.dtype}")
    values = np.empty(rgb.shape, dtype=np.float32)
    np.divide(rgb, np.float32(65535), out=values, casting="unsafe")
    del rgb
    exif = _upright(_tiff_exif(data, name) if _tiff_order(data) else thumb_exif, name)
    return Image(
        pixels=srgb_encode(values) if linear else values,
        alpha=None,
        dtype=np.dtype(np.uint16),
        format="raw",
        icc=LINEAR_SRGB_ICC if linear else SRGB_ICC,
        exif=exif,
        linear=values if linear else None,
    )


def _reason(exc: BaseException, lines: list[bytes]) -> str:
    """LibRaw's own line ("Unexpected end of file") if it printed one, else the exception's."""
    if lines:
        return lines[0].decode("utf-8", "replace").split(":", 1)[-1].strip()[:120]
    text = one_line(exc)
    return text.strip("b'\"") if text.startswith(("b'", 'b"')) else text


def _tiff_order(data: bytes) -> str | None:
    """Byte order of a TIFF-like RAW (classic TIFF, ORF "IIRO"/"MMOR", RW2 "IIU"), else None."""
    head = data[:4]
    if head in (b"II*\x00", b"IIRO", b"IIRS", b"IIU\x00"):
        return "<"
    if head in (b"MM\x00*", b"MMOR"):
        return ">"
    return None


def _tiff_exif(data: bytes, name: str) -> bytes | None:
    """EXIF blob from a TIFF-like RAW's IFD0 descriptive tags and its Exif/GPS sub-IFDs."""
    bo = _tiff_order(data)
    assert bo is not None
    try:
        (first,) = struct.unpack(bo + "I", data[4:8])
        ifd0 = load_ifd(data, first, bo, keep=lambda code: code in EXIF_IFD0_TAGS, depth=0, seen=frozenset())
    except (BadTiff, struct.error) as exc:
        warnings.warn(f"{name}: unreadable RAW metadata ignored ({exc})", MetadataWarning, stacklevel=4)
        return None
    if not ifd0.tags and not ifd0.children:
        return None
    return exif_blob(ifd0, bo)


def _thumbnail_exif(raw: object) -> bytes | None:
    """EXIF of the embedded JPEG preview (CR3, RAF: no TIFF structure to read it from)."""
    try:
        thumb = raw.extract_thumb()  # type: ignore[attr-defined]
    except Exception:  # no preview, or one LibRaw cannot extract: no EXIF then
        return None
    data = thumb.data if isinstance(thumb.data, bytes) else b""
    pos = 2
    while data[:2] == b"\xff\xd8" and pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        payload = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            return payload[6:]
        if marker == 0xDA:
            break
        pos += 2 + length
    return None


def _upright(exif: bytes | None, name: str) -> bytes | None:
    """The EXIF blob with Orientation 1 (LibRaw has rotated the pixels); None if unreadable."""
    if exif is None:
        return None
    try:
        bo, tree = parse_exif(exif)
    except (BadTiff, struct.error) as exc:
        warnings.warn(f"{name}: unreadable RAW EXIF dropped ({exc})", MetadataWarning, stacklevel=4)
        return None
    tags = [t for t in tree.tags if t.code != _ORIENTATION]
    tags.append(TiffTag(_ORIENTATION, 3, 1, struct.pack(bo + "H", 1)))
    return exif_blob(Ifd(tuple(sorted(tags, key=lambda t: t.code)), tree.children), bo)
