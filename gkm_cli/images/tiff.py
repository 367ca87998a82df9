"""TIFF: the first page through tifffile (OpenCV's libtiff for LZW/JPEG data), IFD0's
descriptive tags carried TIFF -> TIFF, EXIF as Exif/GPS sub-IFDs on write."""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import warnings
from collections.abc import Iterator
from typing import Final

import numpy as np
import tifffile

from gkm_cli.errors import ImageReadError
from gkm_cli.images.decoding import check_size, imdecode, one_line
from gkm_cli.images.image import Buffer, Carry, Image, MetadataWarning, TiffTag
from gkm_cli.images.metadata import (
    EXIF_IFD0_TAGS,
    BadTiff,
    Ifd,
    exif_blob,
    ifd_bytes,
    ifd_entries,
    load_ifd,
    parse_exif,
    swap_tree,
)
from gkm_cli.images.samples import READ_DTYPES, to_float, to_native

# Descriptive IFD0 tags carried TIFF -> TIFF (never structural ones; never 37724 layer data,
# which Photoshop would show instead of the deblurred pixels).
_TIFF_CARRY_TAGS: Final = EXIF_IFD0_TAGS | frozenset(
    {269, 285, 316, 18246, 18249, 33723, 34377, 40091, 40092, 40093, 40094, 40095, 50341}
)
_XMP_TAG, _ICC_TAG = 700, 34675


def read_tiff(buf: Buffer, name: str, fh: io.BufferedReader | None, limit: int = 0) -> Image:
    """First page of a TIFF -> Image. LZW/JPEG-compressed data falls back to OpenCV's libtiff."""
    src: io.BufferedReader | io.BytesIO = fh if fh is not None else io.BytesIO(buf)
    try:
        with _quiet_tifffile(), tifffile.TiffFile(src) as tif:
            pages = tif.pages
            page = pages[0]
            if len(pages) > 1:
                note = f"{name}: only the first of {len(pages)} TIFF pages is read"
                warnings.warn(note, MetadataWarning, stacklevel=3)
            native, layout = _tiff_pixels(page, buf, name, limit)
            tags = page.tags
            icc = _tag_bytes(tags.get(_ICC_TAG))
            xmp = _tag_bytes(tags.get(_XMP_TAG))
            compression = None if int(page.compression) == 1 else "zlib"
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # tifffile raises many types on damaged files (its log lines are held back)
        raise ImageReadError(f"{name}: corrupt TIFF ({one_line(exc)})") from None
    gray, has_alpha, premult = layout
    pixels, alpha = to_float(native, bgr=False, gray_source=gray, name=name)
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
    check_size(name, "TIFF", width, height * max(1, int(page.imagedepth)), limit)
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
        raise ImageReadError(f"{name}: unsupported TIFF colour space ({_enum_name(page.photometric)})")
    gray = photometric in (0, 1)
    n_color = 1 if photometric in (0, 1, 3) else 3
    n_extra = spp - n_color
    if n_extra < 0 or (n_extra and photometric == 3):
        raise ImageReadError(f"{name}: unsupported TIFF sample layout ({spp} samples)")
    if n_extra > 1:
        note = f"{name}: {n_extra - 1} extra TIFF channel(s) beyond alpha dropped"
        warnings.warn(note, MetadataWarning, stacklevel=4)
    try:
        arr = page.asarray()
        if "S" in page.axes and page.axes.index("S") == 0 and arr.ndim == 3:  # planar -> contiguous
            arr = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
        arr = imdecode(buf, name, "TIFF", width * height)  # libtiff inside OpenCV handles LZW, JPEG, PackBits
        if arr.ndim == 3 and arr.shape[2] >= 3 and gray:  # gray delivered as BGR(A)
            arr = arr[:, :, [0, 3]] if (arr.shape[2] == 4 and spp == 2) else arr[:, :, 0]
        elif arr.ndim == 3 and arr.shape[2] >= 3:
            arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
        want = (int(page.imagelength), int(page.imagewidth))
        if arr.shape[:2] != want or (arr.ndim == 3 and arr.shape[2] != min(spp, 4)) or (arr.ndim == 2 and spp != 1):
            raise ImageReadError(
                f"{name}: cannot decode this {_enum_name(page.compression)} TIFF layout (needs the imagecodecs package)"
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
    if arr.dtype not in READ_DTYPES:
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


def _enum_name(value: object) -> str:
    """tifffile's enum member's name (its stubs say int; an unknown code stays a plain int)."""
    return str(getattr(value, "name", value))


def _tiff_raw_meta(buf: Buffer, bo: str, name: str) -> tuple[tuple[TiffTag, ...], bytes | None]:
    """Carried descriptive tags and a rebuilt EXIF blob from a classic TIFF's IFD0."""
    if struct.unpack(bo + "H", buf[2:4])[0] != 42:
        warnings.warn(f"{name}: BigTIFF descriptive tags and EXIF are not carried", MetadataWarning, stacklevel=4)
        return (), None
    try:
        (first,) = struct.unpack(bo + "I", buf[4:8])
        ifd0 = load_ifd(buf, first, bo, keep=lambda code: code in _TIFF_CARRY_TAGS, depth=0, seen=frozenset())
    except BadTiff as exc:
        warnings.warn(f"{name}: unreadable TIFF metadata ignored ({exc})", MetadataWarning, stacklevel=4)
        return (), None
    exif = None
    if ifd0.children:
        exif_ifd0 = Ifd(tuple(t for t in ifd0.tags if t.code in EXIF_IFD0_TAGS), ifd0.children)
        exif = exif_blob(exif_ifd0, bo)
    return ifd0.tags, exif


def encode_tiff(
    pixels: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, premult: bool, img: Image, carry: Carry
) -> bytes:
    """TIFF via tifffile, then IFD0 rewritten to add carried tags, XMP and Exif/GPS sub-IFDs."""
    exif_tree: Ifd | None = None
    bo = carry.tiff_byteorder
    if img.exif is not None:
        try:
            exif_bo, exif_tree = parse_exif(img.exif)
        except (BadTiff, struct.error) as exc:
            warnings.warn(f"unreadable EXIF not written to TIFF ({exc})", MetadataWarning, stacklevel=3)
        else:
            if img.format != "tiff":
                bo = exif_bo
            if exif_bo != bo:
                exif_tree = swap_tree(exif_tree)
    native = to_native(pixels, alpha, dtype, bgr=False)
    compression = carry.tiff_compression
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        native,
        byteorder="<" if bo == "<" else ">",  # the Literal tifffile wants; bo is one of the two
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
    tags = {t.code: t for t in (exif_tree.tags if exif_tree else ()) if t.code in EXIF_IFD0_TAGS}
    tags.update({t.code: t for t in carry.tiff_tags})
    if img.xmp is not None:
        tags[_XMP_TAG] = TiffTag(_XMP_TAG, 1, len(img.xmp), img.xmp)
    children = exif_tree.children if exif_tree else ()
    if not tags and not children:
        return data
    return _tiff_add_fields(data, Ifd(tuple(tags.values()), children), bo)


def _tiff_add_fields(data: bytes, extra: Ifd, bo: str) -> bytes:
    """Append a new IFD0 = tifffile's IFD0 + ``extra`` (overriding same codes); patch the header."""
    if struct.unpack(bo + "H", data[2:4])[0] != 42:
        warnings.warn("BigTIFF output: descriptive tags and EXIF not written", MetadataWarning, stacklevel=4)
        return data
    (first,) = struct.unpack(bo + "I", data[4:8])
    fixed = tuple(ifd_entries(data, first, bo))
    start = len(data) + len(data) % 2
    block = ifd_bytes(extra, start, bo, fixed)
    return data[:4] + struct.pack(bo + "I", start) + data[8:] + b"\x00" * (len(data) % 2) + block
