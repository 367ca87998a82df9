"""Image I/O for gkm: PNG, TIFF and JPEG in, the same out, with metadata and precision intact.

Pixels are handed to the engine as float32 ``H x W x C`` arrays in [0, 1] (C = 1 for gray, 3 for
RGB, in RGB order), with any alpha channel split off and carried untouched. The original sample
type (uint8 / uint16 / float) is remembered so that writing reproduces it: a 16-bit TIFF stays a
16-bit TIFF and every uint16 value survives a read -> write round trip exactly.

Metadata is carried by a small pure-Python layer, because OpenCV drops it:

* ICC profile (byte for byte), EXIF and XMP move between all three formats
  (PNG ``iCCP``/``eXIf``/``iTXt``; JPEG ``APP2 ICC_PROFILE``/``APP1 Exif``/``APP1 XMP``;
  TIFF tags 34675 / Exif and GPS sub-IFDs / 700).
* Format-specific extras (PNG text and colour chunks, JPEG comments and APP13/IPTC, TIFF
  descriptive tags such as Artist, Copyright, resolution, IPTC and Photoshop resources) are
  re-emitted only when the output format equals the input format.

EXIF in TIFF is stored the standard way, as an Exif IFD (and GPS IFD) pointed to from IFD0, so
other software sees it. Internally ``Image.exif`` is always a standalone TIFF-structured EXIF
blob (the payload of a JPEG ``Exif`` segment without its 6-byte prefix); for TIFF input it is
rebuilt from the file's IFD0 descriptive tags plus its Exif/GPS/Interop sub-IFDs. Known limit:
offsets inside a maker note refer to the old layout once relocated into a TIFF (JPEG and PNG
outputs carry the blob byte for byte, so they are not affected).

Writes are atomic (temp file in the target folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import mmap
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Union

import cv2
import numpy as np
import tifffile

from gkm_cli.errors import ImageReadError, ImageWriteError, UsageError
from gkm_cli.fileio import atomic_write_bytes, describe_os_error

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "SUPPORTED_SUFFIXES",
    "Carry",
    "Image",
    "JpegSegment",
    "MetadataWarning",
    "PngChunk",
    "TiffTag",
    "decode_image",
    "encode_image",
    "ensure_not_input",
    "format_for_path",
    "is_image_path",
    "read_image",
    "with_pixels",
    "write_image",
]

PathLike = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, mmap.mmap]

FORMATS: Final = ("png", "tiff", "jpeg")
SUFFIX_FORMATS: Final[Mapping[str, str]] = MappingProxyType(
    {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg"}
)
SUPPORTED_SUFFIXES: Final = frozenset(SUFFIX_FORMATS)
_FORMAT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"png": "png", "tif": "tiff", "tiff": "tiff", "jpg": "jpeg", "jpeg": "jpeg"}
)
_BIT_DEPTHS: Final[Mapping[str, tuple[int, ...]]] = MappingProxyType(
    {"png": (8, 16), "tiff": (8, 16, 32), "jpeg": (8,)}
)
_READ_DTYPES: Final = frozenset(np.dtype(t) for t in ("uint8", "uint16", "float16", "float32", "float64"))
_PNG_LEVEL: Final = 4  # zlib level for PNG output: close to level 9 on photos, several times faster.
_ROW_BLOCK: Final = 256  # rows quantised per step on write: bounds the float32 temporary.
#: Default ``max_pixels`` of every reader: 250 MP (a 24 MP photo is far below; a crafted header
#: declaring 100000 x 100000 is refused before any pixel memory is allocated). 0 = no limit.
DEFAULT_MAX_PIXELS: Final = 250_000_000
_CV_MAX_PIXELS: Final = 1 << 30  # OpenCV's own decoder limit (CV_IO_MAX_IMAGE_PIXELS default)
# Lines the bundled decoders (OpenCV's log, libpng, libjpeg, libtiff) print on stderr. They
# never reach the terminal: a decode that produced an error line is a corrupt file.
_DECODER_LINE: Final = re.compile(
    rb"^(\[ ?(WARN|ERROR|INFO|DEBUG)|libpng |Corrupt JPEG|Premature end of JPEG|Invalid JPEG|Invalid SOS|Bogus |"
    rb"Huffman |Unsupported |Inconsistent progression|Warning: |JPEG|TIFF)"
)
_DECODER_ERROR: Final = re.compile(rb"(\[ERROR|libpng error|Corrupt JPEG data|Premature end of JPEG|Invalid |Bogus |Huffman )")
# libjpeg's "Corrupt JPEG data: N extraneous bytes before marker 0xd9" after a complete scan is
# either fill some cameras write before EOI (all 0x00 or all 0xFF: harmless) or the leftover of
# damaged entropy data (anything else): _harmless_jpeg_fill tells them apart.
_JPEG_EXTRANEOUS: Final = re.compile(rb"(\d+) extraneous bytes before marker 0xd9")
# stderr is one per process: decodes that capture it take turns.
_STDERR_LOCK: Final = threading.Lock()


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


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image: float32 pixels in [0, 1] plus everything needed to write it back.

    ``pixels`` is H x W x C (C = 1 gray or 3 RGB, RGB order); ``alpha`` is H x W float32 in
    [0, 1] or None and is never deblurred; ``dtype`` is the sample type of the source file;
    ``exif`` is a TIFF-structured EXIF blob (starts with ``II*`` or ``MM*``).
    Float TIFF input keeps its values unclipped (they may exceed 1).
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


# --------------------------------------------------------------------------------------------
# Paths and formats
# --------------------------------------------------------------------------------------------


def is_image_path(path: PathLike) -> bool:
    """True when the file name has a suffix this module reads (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def format_for_path(path: PathLike) -> str | None:
    """The format implied by a file suffix ("png" | "tiff" | "jpeg"), or None if unknown."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def _normalise_format(fmt: str) -> str:
    """Canonical format name for a user-given one; UsageError if unknown."""
    canon = _FORMAT_ALIASES.get(fmt.lower().lstrip("."))
    if canon is None:
        raise UsageError(f"unsupported image format {fmt!r} (choose png, tiff or jpeg)")
    return canon


def _sniff(head: bytes) -> str | None:
    """Format from the first bytes of a file, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read a PNG, TIFF or JPEG file; the format is taken from its content, not its suffix.

    Peak memory is the decoded native array plus the float32 pixels (for a 45 MP 16-bit RGB
    TIFF: 270 MB + 540 MB); the file itself is memory-mapped, not copied. Every problem is an
    :class:`ImageReadError` whose message is one line naming the file: an image whose header
    declares more than ``max_pixels`` pixels (0 or None: no limit) is refused before decoding,
    and so is corrupt data the decoders only warn about (e.g. libjpeg's "Corrupt JPEG data").
    """
    p = Path(path)
    name = str(p)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ImageReadError(f"{name}: empty file")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                img = _decode(mm, name, None, fh, max_pixels or 0)
            finally:
                try:
                    mm.close()
                except BufferError:  # a view still alive in a traceback; GC closes it later
                    pass
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read ({describe_os_error(exc)})") from None
    return dataclasses.replace(img, path=p)


def decode_image(
    data: bytes | bytearray | memoryview,
    name: str = "<stdin>",
    format: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image:
    """Decode an in-memory PNG / TIFF / JPEG; ``format`` (optional) must match the content.
    Checks as :func:`read_image`."""
    buf = bytes(data) if not isinstance(data, bytes) else data
    if not buf:
        raise ImageReadError(f"{name}: empty input")
    fmt = _normalise_format(format) if format is not None else None
    return _decode(buf, name, fmt, None, max_pixels or 0)


def _check_size(name: str, kind: str, width: int, height: int, limit: int) -> None:
    """Refuse, from the header alone, an empty image or one larger than ``limit`` pixels."""
    if width < 1 or height < 1:
        raise ImageReadError(f"{name}: corrupt {kind} (header declares {width} x {height} pixels)")
    if limit and width * height > limit:
        raise ImageReadError(
            f"{name}: {width} x {height} = {width * height / 1e6:.0f} MP is over the limit of "
            f"{limit / 1e6:g} MP (raise it with --max-pixels, 0 = no limit)"
        )


def _decode(buf: Buffer, name: str, fmt: str | None, fh: io.BufferedReader | None, limit: int = 0) -> Image:
    """Dispatch on the sniffed format; ``fh`` is the open file for TIFF (None: use ``buf``)."""
    found = _sniff(bytes(buf[:8]))
    if found is None:
        want = f" (expected {fmt})" if fmt else ""
        raise ImageReadError(f"{name}: not a PNG, TIFF or JPEG file{want}")
    if fmt is not None and found != fmt:
        raise ImageReadError(f"{name}: data is {found.upper()}, not {fmt.upper()}")
    readers = {"png": _read_png, "jpeg": _read_jpeg}
    try:
        if found in readers:
            return readers[found](buf, name, limit)
        return _read_tiff(buf, name, fh, limit)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # malformed structure past the checks
        raise ImageReadError(f"{name}: corrupt {found.upper()} ({_one_line(exc)})") from None
    except MemoryError:  # within the pixel limit, but not within this machine's memory
        raise ImageReadError(f"{name}: not enough memory to decode this {found.upper()}") from None


def _imdecode(buf: Buffer, name: str, kind: str, pixels: int = 0) -> np.ndarray:
    """cv2 decode keeping bit depth, channels and stored orientation (EXIF rotation not applied).

    The decoders' stderr lines are captured: an error or corrupt-data warning among them makes
    the file corrupt (libjpeg decodes damaged entropy data to a plausible-looking image and only
    says "Corrupt JPEG data" on stderr, naming no file). ``pixels`` is the header's count.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    with _captured_stderr() as lines:
        try:
            out = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            out = None
    harmless = [line for line in lines if _harmless_jpeg_fill(line, arr)]
    del arr
    problem = next((line for line in lines if _DECODER_ERROR.search(line) and line not in harmless), None)
    if problem is None and out is not None and harmless:
        warnings.warn(f"{name}: fill bytes before the JPEG end marker ignored", MetadataWarning, stacklevel=3)
    if out is None and pixels > _CV_MAX_PIXELS:
        raise ImageReadError(f"{name}: {pixels / 1e6:.0f} MP is more than the decoder can read (2^30 pixels)")
    if out is None or problem is not None:
        reason = _decoder_reason(problem) if problem is not None else "decoder failed"
        raise ImageReadError(f"{name}: corrupt {kind} ({reason})")
    return out


def _harmless_jpeg_fill(line: bytes, data: np.ndarray) -> bool:
    """True when libjpeg's "extraneous bytes before marker 0xd9" counts bytes that are all
    0x00 or all 0xFF just before the last EOI marker (camera fill, not damaged scan data)."""
    found = _JPEG_EXTRANEOUS.search(line)
    if found is None:
        return False
    count = int(found.group(1))
    raw = data.tobytes()
    eoi = raw.rfind(b"\xff\xd9")
    fill = raw[eoi - count : eoi] if 0 < count <= eoi else b""
    return len(fill) == count and (fill.strip(b"\x00") == b"" or fill.strip(b"\xff") == b"")


def _decoder_reason(line: bytes) -> str:
    """A decoder's stderr line without OpenCV's log prefix, for a one-line message."""
    text = line.decode("utf-8", "replace").strip()
    text = re.sub(r"^\[[^\]]*\]\s*global \S+ \S+\s*", "", text)  # "[ERROR:0@0.1] global file.cpp:117 Func"
    return text[:120]


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[bytes]]:
    """Collect what C code writes on file descriptor 2 meanwhile; yields the list of lines.

    Decoder lines (see ``_DECODER_LINE``) are kept in the list and not shown; anything else
    written meanwhile (another thread's progress bar) is passed on to the real stderr after.
    """
    lines: list[bytes] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield lines  # no usable stderr: nothing to capture
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield lines
                finally:
                    with contextlib.suppress(OSError, ValueError, AttributeError):
                        sys.stderr.flush()
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    other = []
                    for line in tmp.read().splitlines(keepends=True):
                        if line.strip():  # decoders end some messages with an empty line
                            (lines if _DECODER_LINE.match(line.lstrip()) else other).append(line)
                    if other:
                        with contextlib.suppress(OSError):
                            os.write(2, b"".join(other))
        finally:
            os.close(saved)


def _to_float(native: np.ndarray, bgr: bool, gray_source: bool, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a decoded H x W [x S] array into float32 pixels (RGB order) and alpha.

    One float32 array of the output size is allocated; the division writes straight into it,
    so no intermediate full-size copy exists.
    """
    if native.dtype not in _READ_DTYPES:
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


# ---- PNG -----------------------------------------------------------------------------------

_PNG_SIG: Final = b"\x89PNG\r\n\x1a\n"
_XMP_KEYWORD: Final = b"XML:com.adobe.xmp"
# Chunks whose meaning survives deblurring although PNG marks them unsafe-to-copy.
_PNG_COLOUR_CHUNKS: Final = frozenset({b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCV", b"cLLI"})
_PNG_OWN_CHUNKS: Final = frozenset({b"iCCP", b"eXIf"})


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


def _read_png(buf: Buffer, name: str, limit: int = 0) -> Image:
    """PNG -> Image, keeping 16-bit samples and gray/alpha layout."""
    (width, height, depth, ctype, _interlace), ancillary = _png_chunks(buf, name)
    _check_size(name, "PNG", width, height, limit)
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
    native = _imdecode(buf, name, "PNG", width * height)
    if native.shape[:2] != (height, width):
        raise ImageReadError(f"{name}: corrupt PNG (decoded size differs from header)")
    pixels, alpha = _to_float(native, bgr=True, gray_source=ctype in (0, 4), name=name)
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


# ---- JPEG ----------------------------------------------------------------------------------

_EXIF_PREFIX: Final = b"Exif\x00\x00"
_XMP_PREFIX: Final = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_PREFIX: Final = b"ICC_PROFILE\x00"
_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _read_jpeg(buf: Buffer, name: str, limit: int = 0) -> Image:
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
    _check_size(name, "JPEG", *size, limit)
    if components == 4:
        raise ImageReadError(f"{name}: CMYK JPEG is not supported")
    if buf.find(b"\xff\xd9", pos) < 0:
        raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker)")
    native = _imdecode(buf, name, "JPEG", size[0] * size[1])
    if native.shape[:2] != (size[1], size[0]):
        raise ImageReadError(f"{name}: corrupt JPEG (decoded size differs from header)")
    pixels, alpha = _to_float(native, bgr=True, gray_source=components == 1, name=name)
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


# ---- TIFF ----------------------------------------------------------------------------------

_TYPE_SIZES: Final[Mapping[int, int]] = MappingProxyType(
    {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
)
_SWAP_UNITS: Final[Mapping[int, int]] = MappingProxyType({3: 2, 8: 2, 4: 4, 9: 4, 11: 4, 13: 4, 5: 4, 10: 4, 12: 8})
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 34665, 34853, 40965
_POINTER_TAGS: Final = frozenset({_EXIF_IFD, _GPS_IFD, _INTEROP_IFD})
# IFD0 tags that belong to EXIF's 0th IFD as well as to an ordinary TIFF.
_EXIF_IFD0_TAGS: Final = frozenset({270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 318, 319, 33432})
# Descriptive IFD0 tags carried TIFF -> TIFF (never structural ones; never 37724 layer data,
# which Photoshop would show instead of the deblurred pixels).
_TIFF_CARRY_TAGS: Final = _EXIF_IFD0_TAGS | frozenset(
    {269, 285, 316, 18246, 18249, 33723, 34377, 40091, 40092, 40093, 40094, 40095, 50341}
)
_XMP_TAG, _ICC_TAG = 700, 34675


class _BadTiff(Exception):
    """Malformed IFD structure (internal; turned into a warning or ImageReadError)."""


@dataclass(frozen=True)
class _Ifd:
    """An IFD to lay out: fields plus sub-IFDs hanging off pointer tags."""

    tags: tuple[TiffTag, ...] = ()
    children: tuple[tuple[int, _Ifd], ...] = ()


def _read_tiff(buf: Buffer, name: str, fh: io.BufferedReader | None, limit: int = 0) -> Image:
    """First page of a TIFF -> Image. LZW/JPEG-compressed data falls back to OpenCV's libtiff."""
    src: io.BufferedReader | io.BytesIO = fh if fh is not None else io.BytesIO(buf)  # type: ignore[arg-type]
    try:
        with _quiet_tifffile(), tifffile.TiffFile(src) as tif:
            pages = tif.pages
            page = pages[0]
            if len(pages) > 1:
                warnings.warn(f"{name}: only the first of {len(pages)} TIFF pages is read", MetadataWarning, stacklevel=3)
            native, layout = _tiff_pixels(page, buf, name, limit)
            tags = page.tags
            icc = _tag_bytes(tags.get(_ICC_TAG))
            xmp = _tag_bytes(tags.get(_XMP_TAG))
            compression = None if int(page.compression) == 1 else "zlib"
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # tifffile raises many types on damaged files (its log lines are held back)
        raise ImageReadError(f"{name}: corrupt TIFF ({_one_line(exc)})") from None
    gray, has_alpha, premult = layout
    pixels, alpha = _to_float(native, bgr=False, gray_source=gray, name=name)
    if not has_alpha:
        alpha = None
    dtype = native.dtype
    del native
    bo = "<" if bytes(buf[:2]) == b"II" else ">"
    carried, exif = _tiff_raw_meta(buf, bo, name)
    return Image(
        pixels=pixels,
        alpha=alpha,
        dtype=dtype,
        format="tiff",
        icc=icc,
        exif=exif,
        xmp=xmp,
        alpha_premultiplied=premult,
        carry=Carry(tiff_tags=carried, tiff_byteorder=bo, tiff_compression=compression),
    )


def _tiff_pixels(
    page: tifffile.TiffPage, buf: Buffer, name: str, limit: int = 0
) -> tuple[np.ndarray, tuple[bool, bool, bool]]:
    """Decoded H x W [x S] samples of one page and its (gray, has_alpha, premultiplied) layout."""
    width, height = int(page.imagewidth), int(page.imagelength)
    _check_size(name, "TIFF", width, height * max(1, int(page.imagedepth)), limit)
    size = len(buf)
    for off, cnt in zip(page.dataoffsets, page.databytecounts):
        if off + cnt > size:
            raise ImageReadError(f"{name}: truncated TIFF (image data cut off)")
    if int(page.compression) == 1:  # uncompressed: the strips must hold every sample
        need = width * height * int(page.samplesperpixel) * int(page.bitspersample) // 8
        if sum(int(c) for c in page.databytecounts) < need:
            raise ImageReadError(f"{name}: corrupt TIFF (image data smaller than {width} x {height} pixels need)")
    photometric = int(page.photometric)
    extras = tuple(int(e) for e in page.extrasamples)
    spp = int(page.samplesperpixel)
    if photometric not in (0, 1, 2, 3, 6):
        raise ImageReadError(f"{name}: unsupported TIFF colour space ({page.photometric.name})")
    gray = photometric in (0, 1)
    n_color = 1 if photometric in (0, 1, 3) else 3
    n_extra = spp - n_color
    if n_extra < 0 or (n_extra and photometric == 3):
        raise ImageReadError(f"{name}: unsupported TIFF sample layout ({spp} samples)")
    if n_extra > 1:
        warnings.warn(f"{name}: {n_extra - 1} extra TIFF channel(s) beyond alpha dropped", MetadataWarning, stacklevel=4)
    try:
        arr = page.asarray()
        if "S" in page.axes and page.axes.index("S") == 0 and arr.ndim == 3:  # planar -> contiguous
            arr = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
        arr = _imdecode(buf, name, "TIFF", width * height)  # libtiff inside OpenCV handles LZW, JPEG, PackBits
        if arr.ndim == 3 and arr.shape[2] >= 3 and gray:  # gray delivered as BGR(A)
            arr = arr[:, :, [0, 3]] if (arr.shape[2] == 4 and spp == 2) else arr[:, :, 0]
        elif arr.ndim == 3 and arr.shape[2] >= 3:
            arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
        want = (int(page.imagelength), int(page.imagewidth))
        if arr.shape[:2] != want or (arr.ndim == 3 and arr.shape[2] != min(spp, 4)) or (arr.ndim == 2 and spp != 1):
            raise ImageReadError(
                f"{name}: cannot decode this {page.compression.name} TIFF layout (needs the imagecodecs package)"
            ) from None
    if arr.ndim == 3 and arr.shape[2] > n_color + 1:
        arr = arr[:, :, : n_color + 1]
    if photometric == 3:  # palette -> 16-bit RGB via the colour map
        arr = np.ascontiguousarray(np.asarray(page.colormap, dtype=np.uint16).T[arr])
    elif photometric == 0:  # white is zero: invert to the usual gray
        if arr.dtype.kind == "u":
            arr = np.iinfo(arr.dtype).max - arr
        else:
            arr = 1 - arr
    if arr.dtype not in _READ_DTYPES:
        raise ImageReadError(f"{name}: unsupported TIFF sample type ({page.bitspersample}-bit {page.dtype})")
    premult = bool(n_extra) and extras[:1] == (1,)
    return arr, (gray, n_extra > 0 and photometric != 3, premult)


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Keep tifffile's log lines (warnings about damaged structure) off the console while a
    file is read: the reader reports a bad file in its own one line, naming it."""
    log = logging.getLogger("tifffile")
    handler = logging.NullHandler()
    was = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = was


def _tag_bytes(tag: tifffile.TiffTag | None) -> bytes | None:
    """A byte-valued tag (ICC, XMP) as bytes."""
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(np.asarray(value, dtype=np.uint8)) if not isinstance(value, bytes) else value


def _tiff_raw_meta(buf: Buffer, bo: str, name: str) -> tuple[tuple[TiffTag, ...], bytes | None]:
    """Carried descriptive tags and a rebuilt EXIF blob from a classic TIFF's IFD0."""
    if struct.unpack(bo + "H", buf[2:4])[0] != 42:
        warnings.warn(f"{name}: BigTIFF descriptive tags and EXIF are not carried", MetadataWarning, stacklevel=4)
        return (), None
    try:
        (first,) = struct.unpack(bo + "I", buf[4:8])
        ifd0 = _load_ifd(buf, first, bo, keep=lambda code: code in _TIFF_CARRY_TAGS, depth=0, seen=frozenset())
    except _BadTiff as exc:
        warnings.warn(f"{name}: unreadable TIFF metadata ignored ({exc})", MetadataWarning, stacklevel=4)
        return (), None
    exif = None
    if ifd0.children:
        exif_ifd0 = _Ifd(tuple(t for t in ifd0.tags if t.code in _EXIF_IFD0_TAGS), ifd0.children)
        exif = _exif_blob(exif_ifd0, bo)
    return ifd0.tags, exif


def _ifd_entries(buf: Buffer, offset: int, bo: str) -> list[tuple[int, int, int, bytes]]:
    """(code, type, count, 4-byte value field) of each entry of the classic IFD at ``offset``."""
    if offset < 8 or offset + 2 > len(buf):
        raise _BadTiff(f"IFD offset {offset} out of range")
    (count,) = struct.unpack(bo + "H", buf[offset : offset + 2])
    if count > 4096 or offset + 2 + 12 * count > len(buf):
        raise _BadTiff("IFD runs past the end of the data")
    raw = bytes(buf[offset + 2 : offset + 2 + 12 * count])
    return [(*struct.unpack(bo + "HHI", raw[i : i + 8]), raw[i + 8 : i + 12]) for i in range(0, 12 * count, 12)]


def _load_ifd(buf: Buffer, offset: int, bo: str, keep: Callable[[int], bool], depth: int, seen: frozenset[int]) -> _Ifd:
    """Parse an IFD (and its Exif/GPS/Interop sub-IFDs) into raw fields, keeping ``keep(code)``."""
    if offset in seen or depth > 3:
        raise _BadTiff("IFD loop")
    tags: list[TiffTag] = []
    children: list[tuple[int, _Ifd]] = []
    for code, dtype, count, value in _ifd_entries(buf, offset, bo):
        if dtype not in _TYPE_SIZES:
            continue
        if code in _POINTER_TAGS and dtype in (4, 13) and count == 1:
            (child,) = struct.unpack(bo + "I", value)
            children.append((code, _load_ifd(buf, child, bo, lambda _: True, depth + 1, seen | {offset})))
        elif keep(code):
            nbytes = _TYPE_SIZES[dtype] * count
            if nbytes <= 4:
                data = value[:nbytes]
            else:
                (at,) = struct.unpack(bo + "I", value)
                if at + nbytes > len(buf):
                    raise _BadTiff(f"tag {code} value out of range")
                data = bytes(buf[at : at + nbytes])
            tags.append(TiffTag(code, dtype, count, data))
    return _Ifd(tuple(tags), tuple(children))


def _exif_blob(ifd0: _Ifd, bo: str) -> bytes:
    """A standalone TIFF-structured EXIF blob (header + IFD0 + sub-IFDs), offsets from 0."""
    head = (b"II" if bo == "<" else b"MM") + struct.pack(bo + "HI", 42, 8)
    return head + _ifd_bytes(ifd0, 8, bo, ())


def _parse_exif(blob: bytes) -> tuple[str, _Ifd]:
    """Byte order and IFD0 tree (thumbnail IFD1 dropped) of a TIFF-structured EXIF blob."""
    bo = {b"II": "<", b"MM": ">"}.get(blob[:2])
    if bo is None or len(blob) < 8 or struct.unpack(bo + "H", blob[2:4])[0] != 42:
        raise _BadTiff("no TIFF header")
    (first,) = struct.unpack(bo + "I", blob[4:8])
    return bo, _load_ifd(blob, first, bo, lambda _: True, 0, frozenset())


def _ifd_bytes(ifd: _Ifd, start: int, bo: str, fixed: tuple[tuple[int, int, int, bytes], ...]) -> bytes:
    """Lay out ``ifd`` at file offset ``start`` (even): entries, then values, then sub-IFDs.

    ``fixed`` entries (code, type, count, value field) already point into the file and are
    copied as they are.
    """
    own = {t.code for t in ifd.tags} | {c for c, _ in ifd.children}
    items: list[tuple[int, int, object]] = [(t.code, 0, t) for t in ifd.tags]
    items += [(c, 1, sub) for c, sub in ifd.children]
    items += [(f[0], 2, f) for f in fixed if f[0] not in own]
    items.sort(key=lambda it: it[0])
    data_at = start + 2 + 12 * len(items) + 4
    tail = bytearray()
    fields: dict[int, bytes] = {}
    for i, (_, kind, item) in enumerate(items):
        if kind == 0:
            tag = item  # type: ignore[assignment]
            assert isinstance(tag, TiffTag)
            if len(tag.data) <= 4:
                fields[i] = struct.pack(bo + "HHI", tag.code, tag.dtype, tag.count) + tag.data.ljust(4, b"\x00")
            else:
                fields[i] = struct.pack(bo + "HHII", tag.code, tag.dtype, tag.count, data_at + len(tail))
                tail += tag.data + b"\x00" * (len(tag.data) % 2)
        elif kind == 2:
            code, dtype, count, value = item  # type: ignore[misc]
            fields[i] = struct.pack(bo + "HHI", code, dtype, count) + value
    for i, (code, kind, item) in enumerate(items):
        if kind == 1:
            at = data_at + len(tail)
            fields[i] = struct.pack(bo + "HHII", code, 4, 1, at)
            tail += _ifd_bytes(item, at, bo, ())  # type: ignore[arg-type]
    head = struct.pack(bo + "H", len(items)) + b"".join(fields[i] for i in range(len(items))) + b"\x00" * 4
    return head + bytes(tail)


def _swap_tree(ifd: _Ifd) -> _Ifd:
    """The same fields with every multi-byte value byte-swapped (other byte order)."""
    return _Ifd(tuple(_swap_tag(t) for t in ifd.tags), tuple((c, _swap_tree(s)) for c, s in ifd.children))


def _swap_tag(tag: TiffTag) -> TiffTag:
    """One field byte-swapped; BYTE/ASCII/UNDEFINED values are left as they are."""
    unit = _SWAP_UNITS.get(tag.dtype)
    if unit is None:
        return tag
    swapped = np.frombuffer(tag.data, dtype=f"u{unit}").byteswap().tobytes()
    return dataclasses.replace(tag, data=swapped)


def _one_line(exc: BaseException) -> str:
    """First line of an exception message, shortened for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _output_dtype(src: np.dtype, fmt: str, bit_depth: int | None) -> np.dtype:
    """Sample type written: the source's where the format allows, else the closest one."""
    if bit_depth is not None:
        if bit_depth not in _BIT_DEPTHS[fmt]:
            allowed = "/".join(str(b) for b in _BIT_DEPTHS[fmt])
            raise UsageError(f"{fmt.upper()} cannot store {bit_depth}-bit samples (allowed: {allowed})")
        return np.dtype({8: np.uint8, 16: np.uint16, 32: np.float32}[bit_depth])
    if fmt == "jpeg":
        return np.dtype(np.uint8)
    if src.kind == "f":
        return src if fmt == "tiff" else np.dtype(np.uint16)
    return src


def _to_native(pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, bgr: bool) -> np.ndarray:
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


def _unpremultiply(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour divided by alpha (where alpha > 0), for formats with straight alpha only."""
    out = pixels.copy()
    a = alpha[:, :, None]
    np.divide(pixels, a, out=out, where=a > 0)
    return np.clip(out, 0, 1, out=out)


def encode_image(img: Image, format: str | None = None, bit_depth: int | None = None, jpeg_quality: int = 95) -> bytes:
    """Encode ``img`` as PNG / TIFF / JPEG bytes (default: its own format and sample type).

    Metadata (ICC, EXIF, XMP) is always carried; format-specific extras only to the same
    format. JPEG output drops alpha (with a MetadataWarning) and is 8-bit only.
    Peak memory: pixels + one native-type copy + the encoded bytes.
    """
    fmt = _normalise_format(format) if format is not None else img.format
    dtype = _output_dtype(img.dtype, fmt, bit_depth)
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"JPEG quality must be 1..100, got {jpeg_quality}")
    pixels, alpha = img.pixels, img.alpha
    if fmt == "jpeg" and alpha is not None:
        warnings.warn("alpha channel dropped: JPEG cannot store transparency", MetadataWarning, stacklevel=2)
        alpha = None
    premult = img.alpha_premultiplied and alpha is not None
    if premult and fmt != "tiff":
        pixels, premult = _unpremultiply(pixels, alpha), False  # type: ignore[arg-type]
    same = fmt == img.format
    if fmt == "png":
        return _encode_png(pixels, alpha, dtype, img, img.carry.png_chunks if same else ())
    if fmt == "jpeg":
        return _encode_jpeg(pixels, dtype, img, img.carry.jpeg_segments if same else (), jpeg_quality)
    carry = img.carry if same else Carry()
    return _encode_tiff(pixels, alpha, dtype, premult, img, carry)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One serialised PNG chunk with length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png(
    pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, img: Image, extras: tuple[PngChunk, ...]
) -> bytes:
    """PNG via OpenCV (gray+alpha via a small own encoder), then metadata chunks after IHDR."""
    native = _to_native(pixels, alpha, dtype, bgr=True)
    if native.ndim == 3 and native.shape[2] == 2:
        png = _encode_png_gray_alpha(native)
    else:
        ok, enc = cv2.imencode(".png", native, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])
        if not ok:
            raise ImageWriteError("PNG encoder failed")
        png = enc.tobytes()
    del native
    meta: list[bytes] = []
    if img.icc is not None:
        meta.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(img.icc, 9)))
    if img.exif is not None:
        meta.append(_png_chunk(b"eXIf", img.exif))
    if img.xmp is not None:
        meta.append(_png_chunk(b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + img.xmp))
    meta += [_png_chunk(c.kind, c.data) for c in extras]
    head = 8 + 25  # signature + IHDR chunk
    return png[:head] + b"".join(meta) + png[head:]


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
    return _PNG_SIG + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _png_chunk(b"IEND", b"")


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One serialised JPEG marker segment."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _encode_jpeg(pixels: np.ndarray, dtype: np.dtype, img: Image, extras: tuple[JpegSegment, ...], quality: int) -> bytes:
    """JPEG via OpenCV (4:4:4 chroma from quality 90 up), then APP1/APP2 metadata after SOI."""
    native = _to_native(pixels, None, dtype, bgr=True)
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


def _encode_tiff(
    pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, premult: bool, img: Image, carry: Carry
) -> bytes:
    """TIFF via tifffile, then IFD0 rewritten to add carried tags, XMP and Exif/GPS sub-IFDs."""
    exif_tree: _Ifd | None = None
    bo = carry.tiff_byteorder
    if img.exif is not None:
        try:
            exif_bo, exif_tree = _parse_exif(img.exif)
        except (_BadTiff, struct.error) as exc:
            warnings.warn(f"unreadable EXIF not written to TIFF ({exc})", MetadataWarning, stacklevel=3)
        else:
            if img.format != "tiff":
                bo = exif_bo
            if exif_bo != bo:
                exif_tree = _swap_tree(exif_tree)
    native = _to_native(pixels, alpha, dtype, bgr=False)
    compression = carry.tiff_compression
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        native,
        byteorder=bo,
        photometric="minisblack" if pixels.shape[2] == 1 else "rgb",
        planarconfig="contig" if native.ndim == 3 else None,
        extrasamples=((1 if premult else 2),) if alpha is not None else None,
        compression=compression,
        predictor=bool(compression) and dtype.kind == "u",
        iccprofile=img.icc,
        metadata=None,
        software=False,
    )
    del native
    data = buf.getvalue()
    tags = {t.code: t for t in (exif_tree.tags if exif_tree else ()) if t.code in _EXIF_IFD0_TAGS}
    tags.update({t.code: t for t in carry.tiff_tags})
    if img.xmp is not None:
        tags[_XMP_TAG] = TiffTag(_XMP_TAG, 1, len(img.xmp), img.xmp)
    children = exif_tree.children if exif_tree else ()
    if not tags and not children:
        return data
    return _tiff_add_fields(data, _Ifd(tuple(tags.values()), children), bo)


def _tiff_add_fields(data: bytes, extra: _Ifd, bo: str) -> bytes:
    """Append a new IFD0 = tifffile's IFD0 + ``extra`` (overriding same codes); patch the header."""
    if struct.unpack(bo + "H", data[2:4])[0] != 42:
        warnings.warn("BigTIFF output: descriptive tags and EXIF not written", MetadataWarning, stacklevel=4)
        return data
    (first,) = struct.unpack(bo + "I", data[4:8])
    fixed = tuple(_ifd_entries(data, first, bo))
    start = len(data) + len(data) % 2
    block = _ifd_bytes(extra, start, bo, fixed)
    return data[:4] + struct.pack(bo + "I", start) + data[8:] + b"\x00" * (len(data) % 2) + block


# ---- Files ---------------------------------------------------------------------------------


def ensure_not_input(out: PathLike, inputs: Iterable[PathLike]) -> None:
    """Raise ImageWriteError if ``out`` is (or links to) one of the ``inputs``."""
    out_p = Path(out)
    for inp in inputs:
        in_p = Path(inp)
        same = out_p.resolve() == in_p.resolve()
        if not same and out_p.exists() and in_p.exists():
            same = os.path.samefile(out_p, in_p)
        if same:
            raise ImageWriteError(f"{out_p}: refusing to overwrite input file {in_p}")


def write_image(
    path: PathLike,
    img: Image,
    *,
    format: str | None = None,
    bit_depth: int | None = None,
    jpeg_quality: int = 95,
    forbid_same_as: PathLike | Iterable[PathLike] | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Encode and atomically write ``img``; returns the path written.

    Format: ``format`` if given, else the path's suffix if known, else the image's own format.
    ``forbid_same_as`` names input file(s) that must not be overwritten. ``before_replace(tmp)``
    runs on the finished temp file just before it is renamed into place.
    """
    p = Path(path)
    by_suffix = format_for_path(p)
    if format is not None:
        fmt = _normalise_format(format)
        if by_suffix is not None and by_suffix != fmt:
            raise UsageError(f"{p}: suffix {p.suffix} does not match output format {fmt}")
    else:
        fmt = by_suffix or img.format
    if forbid_same_as is not None:
        guard = [forbid_same_as] if isinstance(forbid_same_as, (str, os.PathLike)) else list(forbid_same_as)
        ensure_not_input(p, guard)
    data = encode_image(img, fmt, bit_depth, jpeg_quality)
    _atomic_write(p, data, before_replace)
    return p


def _atomic_write(path: Path, data: bytes, before_replace: Callable[[Path], None] | None = None) -> None:
    """Write via a temp file in the same folder, fsync, then os.replace; no partial files."""
    if path.is_dir():
        raise ImageWriteError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise ImageWriteError(f"{path}: folder {path.parent} does not exist")
    try:
        atomic_write_bytes(path, data, make_parents=False, before_replace=before_replace)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({describe_os_error(exc)})", errno=exc.errno) from None
