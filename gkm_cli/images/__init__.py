"""Image I/O for gkm: PNG, TIFF and JPEG in, the same out, with metadata and precision intact;
with the ``gkm-cli[formats]`` extra also WebP, HEIF/HEIC, AVIF, EXR and camera RAW (read only,
written as 16-bit TIFF). docs/FORMATS.md has the table.

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

Writes are atomic (:func:`gkm_cli.fileio.atomic_write_bytes`).

Layout: this module is the public API (read, decode, encode, write); ``formats`` holds the one
suffix/format table, ``image`` the :class:`Image` type, ``png``/``jpeg``/``tiff`` one module per
format, ``webp`` (WebP, AVIF), ``heif``, ``exr`` and ``raw`` one per optional format family
(their packages imported on first use through ``plugins``), ``colour`` linear <-> sRGB and the
ICC profiles gkm writes, ``metadata`` the EXIF/TIFF field machinery, ``decoding`` the pixel
limit and the captured decoder stderr, ``samples`` the native <-> float conversion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import mmap
import os
import struct
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from gkm_cli.errors import ImageReadError, ImageWriteError, UsageError
from gkm_cli.fileio import atomic_write_bytes, describe_os_error
from gkm_cli.images.colour import output_colour
from gkm_cli.images.decoding import DEFAULT_MAX_PIXELS, one_line
from gkm_cli.images.exr import encode_exr, read_exr
from gkm_cli.images.formats import (
    DEFAULT_OUTPUT,
    FORMAT_ALIASES,
    FORMATS,
    OTHER_IMAGE_SUFFIXES,
    OUTPUT_SUFFIX,
    RAW_PAIR_MODES,
    RAW_SUFFIXES,
    SUFFIX_FORMATS,
    SUPPORTED_SUFFIXES,
    UNWRITABLE_SUFFIXES,
    WRITE_FORMATS,
    format_for_path,
    is_image_path,
    normalise_format,
    raw_pair_drops,
    sniff,
)
from gkm_cli.images.heif import encode_heif, read_heif
from gkm_cli.images.image import (
    Buffer,
    Carry,
    Image,
    JpegSegment,
    MetadataWarning,
    PathLike,
    PngChunk,
    TiffTag,
    with_pixels,
)
from gkm_cli.images.jpeg import encode_jpeg, read_jpeg
from gkm_cli.images.png import encode_png, encode_png_array, read_png
from gkm_cli.images.raw import is_tiff_raw, read_raw
from gkm_cli.images.samples import output_dtype, unpremultiply
from gkm_cli.images.tiff import encode_tiff, read_tiff
from gkm_cli.images.webp import encode_pillow, read_pillow

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_OUTPUT",
    "FORMATS",
    "FORMAT_ALIASES",
    "OTHER_IMAGE_SUFFIXES",
    "OUTPUT_SUFFIX",
    "RAW_PAIR_MODES",
    "RAW_SUFFIXES",
    "SUFFIX_FORMATS",
    "SUPPORTED_SUFFIXES",
    "UNWRITABLE_SUFFIXES",
    "WRITE_FORMATS",
    "Carry",
    "Image",
    "JpegSegment",
    "MetadataWarning",
    "PngChunk",
    "TiffTag",
    "decode_image",
    "encode_image",
    "encode_png_array",
    "ensure_not_input",
    "format_for_path",
    "is_image_path",
    "raw_pair_drops",
    "read_image",
    "with_pixels",
    "write_image",
]


def read_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, raw_linear: bool = False) -> Image:
    """Read an image file; the format is taken from its content, not its suffix (except that a
    TIFF-structured file with a RAW suffix, e.g. a .NEF, is read as camera RAW). ``raw_linear``:
    RAW develops to linear light instead of sRGB (images/raw.py).

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
                raw_name = p.suffix.lower() in RAW_SUFFIXES
                img = _decode(mm, name, None, fh, max_pixels or 0, raw_name=raw_name, raw_linear=raw_linear)
            finally:
                with contextlib.suppress(BufferError):  # a view still alive in a traceback; GC closes it later
                    mm.close()
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
    raw_linear: bool = False,
) -> Image:
    """Decode an in-memory image; ``format`` (optional) must match the content.
    Checks as :func:`read_image`."""
    buf = bytes(data) if not isinstance(data, bytes) else data
    if not buf:
        raise ImageReadError(f"{name}: empty input")
    fmt = normalise_format(format) if format is not None else None
    return _decode(buf, name, fmt, None, max_pixels or 0, raw_linear=raw_linear)


def _decode(
    buf: Buffer,
    name: str,
    fmt: str | None,
    fh: io.BufferedReader | None,
    limit: int = 0,
    *,
    raw_name: bool = False,
    raw_linear: bool = False,
) -> Image:
    """Dispatch on the sniffed format; ``fh`` is the open file for TIFF (None: use ``buf``).
    ``raw_name``: the file's suffix is a camera RAW one (a TIFF-structured NEF, ARW... is RAW)."""
    found = sniff(bytes(buf[:32]))
    if found == "tiff" and (raw_name or is_tiff_raw(buf)):
        found = "raw"
    elif found is None and raw_name:
        found = "raw"  # a RAW container sniff() does not know: LibRaw tells
    if found is None:
        want = f" (expected {fmt})" if fmt else ""
        raise ImageReadError(f"{name}: not an image file gkm reads (PNG, TIFF, JPEG, WebP, HEIF, AVIF, EXR, RAW){want}")
    if fmt is not None and found != fmt:
        raise ImageReadError(f"{name}: data is {found.upper()}, not {fmt.upper()}")
    readers: dict[str, Callable[[Buffer, str, int], Image]] = {
        "png": read_png, "jpeg": read_jpeg, "heif": read_heif, "exr": read_exr,
    }  # fmt: skip
    try:
        if found in readers:
            return readers[found](buf, name, limit)
        if found in ("webp", "avif"):
            return read_pillow(buf, name, found, limit)
        if found == "raw":
            return read_raw(buf, name, limit, linear=raw_linear)
        return read_tiff(buf, name, fh, limit)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # malformed structure past the checks
        raise ImageReadError(f"{name}: corrupt {found.upper()} ({one_line(exc)})") from None
    except MemoryError:  # within the pixel limit, but not within this machine's memory
        raise ImageReadError(f"{name}: not enough memory to decode this {found.upper()}") from None


def encode_image(img: Image, format: str | None = None, bit_depth: int | None = None, jpeg_quality: int = 95) -> bytes:
    """Encode ``img`` as bytes of ``format`` (default: its own format, TIFF for RAW, and its
    own sample type where the format allows).

    Metadata (ICC, EXIF, XMP) is always carried where the format stores it; format-specific
    extras only to the same format. JPEG output drops alpha (with a MetadataWarning); JPEG,
    WebP and AVIF are 8-bit. ``jpeg_quality`` is also the quality of lossy WebP, HEIF and AVIF.
    EXR output is linear light (images/colour.py). Peak memory: pixels + one native-type copy
    + the encoded bytes.
    """
    fmt = normalise_format(format) if format is not None else DEFAULT_OUTPUT[img.format]
    dtype = output_dtype(img.dtype, fmt, bit_depth)
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"JPEG quality must be 1..100, got {jpeg_quality}")
    pixels, icc = output_colour(img, fmt)
    alpha = img.alpha
    if icc is not img.icc:
        img = dataclasses.replace(img, icc=icc)
    if fmt == "jpeg" and alpha is not None:
        warnings.warn("alpha channel dropped: JPEG cannot store transparency", MetadataWarning, stacklevel=2)
        alpha = None
    premult = img.alpha_premultiplied and alpha is not None
    if premult and alpha is not None and fmt not in ("tiff", "exr"):  # (premult already implies an alpha)
        pixels, premult = unpremultiply(pixels, alpha), False
    same = fmt == img.format
    if fmt == "png":
        return encode_png(pixels, alpha, dtype, img, img.carry.png_chunks if same else ())
    if fmt == "jpeg":
        return encode_jpeg(pixels, dtype, img, img.carry.jpeg_segments if same else (), jpeg_quality)
    if fmt in ("webp", "avif"):
        return encode_pillow(pixels, alpha, img, fmt, img.icc, jpeg_quality)
    if fmt == "heif":
        return encode_heif(pixels, alpha, dtype, img, img.icc, jpeg_quality)
    if fmt == "exr":
        return encode_exr(pixels, alpha, dtype, img.carry if same else Carry())
    carry = img.carry if same else Carry()
    return encode_tiff(pixels, alpha, dtype, premult, img, carry)


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

    Format: ``format`` if given, else the path's suffix if known, else the image's own format
    (TIFF for RAW). A RAW suffix (``x.dng``) is refused: gkm never writes RAW.
    ``forbid_same_as`` names input file(s) that must not be overwritten. ``before_replace(tmp)``
    runs on the finished temp file just before it is renamed into place.
    """
    p = Path(path)
    if p.suffix.lower() in UNWRITABLE_SUFFIXES:
        raise UsageError(f"{p}: cannot write {p.suffix} files (write {', '.join(WRITE_FORMATS)})")
    by_suffix = format_for_path(p)
    if format is not None:
        fmt = normalise_format(format)
        if by_suffix is not None and by_suffix != fmt:
            raise UsageError(f"{p}: suffix {p.suffix} does not match output format {fmt}")
    else:
        fmt = by_suffix or DEFAULT_OUTPUT[img.format]
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
