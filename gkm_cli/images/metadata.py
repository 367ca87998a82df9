"""EXIF in TIFF structure: raw IFD fields read, laid out, and byte-swapped (pure Python).

``Image.exif`` is a standalone TIFF-structured EXIF blob; a TIFF stores the same fields as an
Exif IFD (and GPS IFD) pointed to from IFD0. ICC profiles and XMP are plain bytes moved by each
format's module (PNG ``iCCP``/``iTXt``, JPEG ``APP2``/``APP1``, TIFF tags 34675 / 700).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np

from gkm_cli.images.image import Buffer, TiffTag

_TYPE_SIZES: Final[Mapping[int, int]] = MappingProxyType(
    {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
)
_SWAP_UNITS: Final[Mapping[int, int]] = MappingProxyType({3: 2, 8: 2, 4: 4, 9: 4, 11: 4, 13: 4, 5: 4, 10: 4, 12: 8})
EXIF_IFD, GPS_IFD, INTEROP_IFD = 34665, 34853, 40965
_POINTER_TAGS: Final = frozenset({EXIF_IFD, GPS_IFD, INTEROP_IFD})
# IFD0 tags that belong to EXIF's 0th IFD as well as to an ordinary TIFF.
EXIF_IFD0_TAGS: Final = frozenset({270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 318, 319, 33432})


class BadTiff(Exception):
    """Malformed IFD structure (internal; turned into a warning or ImageReadError)."""


@dataclass(frozen=True)
class Ifd:
    """An IFD to lay out: fields plus sub-IFDs hanging off pointer tags."""

    tags: tuple[TiffTag, ...] = ()
    children: tuple[tuple[int, Ifd], ...] = ()


def ifd_entries(buf: Buffer, offset: int, bo: str) -> list[tuple[int, int, int, bytes]]:
    """(code, type, count, 4-byte value field) of each entry of the classic IFD at ``offset``."""
    if offset < 8 or offset + 2 > len(buf):
        raise BadTiff(f"IFD offset {offset} out of range")
    (count,) = struct.unpack(bo + "H", buf[offset : offset + 2])
    if count > 4096 or offset + 2 + 12 * count > len(buf):
        raise BadTiff("IFD runs past the end of the data")
    raw = bytes(buf[offset + 2 : offset + 2 + 12 * count])
    return [(*struct.unpack(bo + "HHI", raw[i : i + 8]), raw[i + 8 : i + 12]) for i in range(0, 12 * count, 12)]


def load_ifd(buf: Buffer, offset: int, bo: str, keep: Callable[[int], bool], depth: int, seen: frozenset[int]) -> Ifd:
    """Parse an IFD (and its Exif/GPS/Interop sub-IFDs) into raw fields, keeping ``keep(code)``."""
    if offset in seen or depth > 3:
        raise BadTiff("IFD loop")
    tags: list[TiffTag] = []
    children: list[tuple[int, Ifd]] = []
    for code, dtype, count, value in ifd_entries(buf, offset, bo):
        if dtype not in _TYPE_SIZES:
            continue
        if code in _POINTER_TAGS and dtype in (4, 13) and count == 1:
            (child,) = struct.unpack(bo + "I", value)
            children.append((code, load_ifd(buf, child, bo, lambda _: True, depth + 1, seen | {offset})))
        elif keep(code):
            nbytes = _TYPE_SIZES[dtype] * count
            if nbytes <= 4:
                data = value[:nbytes]
            else:
                (at,) = struct.unpack(bo + "I", value)
                if at + nbytes > len(buf):
                    raise BadTiff(f"tag {code} value out of range")
                data = bytes(buf[at : at + nbytes])
            tags.append(TiffTag(code, dtype, count, data))
    return Ifd(tuple(tags), tuple(children))


def exif_blob(ifd0: Ifd, bo: str) -> bytes:
    """A standalone TIFF-structured EXIF blob (header + IFD0 + sub-IFDs), offsets from 0."""
    head = (b"II" if bo == "<" else b"MM") + struct.pack(bo + "HI", 42, 8)
    return head + ifd_bytes(ifd0, 8, bo, ())


def parse_exif(blob: bytes) -> tuple[str, Ifd]:
    """Byte order and IFD0 tree (thumbnail IFD1 dropped) of a TIFF-structured EXIF blob."""
    bo = {b"II": "<", b"MM": ">"}.get(blob[:2])
    if bo is None or len(blob) < 8 or struct.unpack(bo + "H", blob[2:4])[0] != 42:
        raise BadTiff("no TIFF header")
    (first,) = struct.unpack(bo + "I", blob[4:8])
    return bo, load_ifd(blob, first, bo, lambda _: True, 0, frozenset())


def ifd_bytes(ifd: Ifd, start: int, bo: str, fixed: tuple[tuple[int, int, int, bytes], ...]) -> bytes:
    """Lay out ``ifd`` at file offset ``start`` (even): entries, then values, then sub-IFDs.

    ``fixed`` entries (code, type, count, value field) already point into the file and are
    copied as they are.
    """
    own = {t.code for t in ifd.tags} | {c for c, _ in ifd.children}
    # (code, entry): a field, a sub-IFD behind a pointer tag, or a fixed entry; sorted by code
    # (stable: at equal codes, fields before sub-IFDs before fixed entries).
    items: list[tuple[int, TiffTag | Ifd | tuple[int, int, int, bytes]]] = [(t.code, t) for t in ifd.tags]
    items += [(c, sub) for c, sub in ifd.children]
    items += [(f[0], f) for f in fixed if f[0] not in own]
    items.sort(key=lambda it: it[0])
    data_at = start + 2 + 12 * len(items) + 4
    tail = bytearray()
    fields: dict[int, bytes] = {}
    for i, (_, item) in enumerate(items):
        if isinstance(item, TiffTag):
            if len(item.data) <= 4:
                fields[i] = struct.pack(bo + "HHI", item.code, item.dtype, item.count) + item.data.ljust(4, b"\x00")
            else:
                fields[i] = struct.pack(bo + "HHII", item.code, item.dtype, item.count, data_at + len(tail))
                tail += item.data + b"\x00" * (len(item.data) % 2)
        elif isinstance(item, tuple):
            code, dtype, count, value = item
            fields[i] = struct.pack(bo + "HHI", code, dtype, count) + value
    for i, (code, item) in enumerate(items):  # sub-IFDs after every field's value
        if isinstance(item, Ifd):
            at = data_at + len(tail)
            fields[i] = struct.pack(bo + "HHII", code, 4, 1, at)
            tail += ifd_bytes(item, at, bo, ())
    head = struct.pack(bo + "H", len(items)) + b"".join(fields[i] for i in range(len(items))) + b"\x00" * 4
    return head + bytes(tail)


def swap_tree(ifd: Ifd) -> Ifd:
    """The same fields with every multi-byte value byte-swapped (other byte order)."""
    return Ifd(tuple(_swap_tag(t) for t in ifd.tags), tuple((c, swap_tree(s)) for c, s in ifd.children))


def _swap_tag(tag: TiffTag) -> TiffTag:
    """One field byte-swapped; BYTE/ASCII/UNDEFINED values are left as they are."""
    unit = _SWAP_UNITS.get(tag.dtype)
    if unit is None:
        return tag
    swapped = np.frombuffer(tag.data, dtype=f"u{unit}").byteswap().tobytes()
    return dataclasses.replace(tag, data=swapped)


def embed_options(icc: bytes | None, exif: bytes | None, xmp: bytes | None) -> dict[str, bytes]:
    """The ``icc_profile`` / ``exif`` / ``xmp`` save options of Pillow-style encoders (Pillow's
    WebP/AVIF, pillow-heif): the blocks the image carries, none for what it lacks."""
    blocks = {"icc_profile": icc, "exif": exif, "xmp": xmp}
    return {k: v for k, v in blocks.items() if v is not None}
